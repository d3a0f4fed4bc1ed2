package cdnmix

import (
	"math"
	"sync"
)

// wrrScale turns ratios into integer weights; integers keep the sequence
// exact and free of float drift.
const wrrScale = 1_000_000

// wrr is nginx's smooth weighted round-robin: every pick adds each peer's
// weight to its current value, picks the largest and subtracts the total
// from it. After n picks each peer has been chosen within a few picks of
// n × weight / total, and picks of one peer are spread evenly, so ratios
// hold request by request. Peers are vendor indices.
type wrr struct {
	mu     sync.Mutex
	peers  []int
	weight []int64
	cur    []int64
	total  int64
}

// newWRR builds a balancer over the vendors with a positive ratio
// (ratios[i] belongs to vendor i).
func newWRR(ratios []float64) *wrr {
	w := &wrr{}
	for i, r := range ratios {
		if !(r > 0) {
			continue
		}
		wt := int64(math.Round(r * wrrScale))
		wt = max(wt, 1)
		w.peers = append(w.peers, i)
		w.weight = append(w.weight, wt)
		w.total += wt
	}
	w.cur = make([]int64, len(w.peers))
	return w
}

// next returns the vendor index of the next pick, or -1 with no peers.
func (w *wrr) next() int {
	switch len(w.peers) {
	case 0:
		return -1
	case 1:
		return w.peers[0]
	}
	w.mu.Lock()
	best := 0
	for i := range w.cur {
		w.cur[i] += w.weight[i]
		if w.cur[i] > w.cur[best] {
			best = i
		}
	}
	w.cur[best] -= w.total
	w.mu.Unlock()
	return w.peers[best]
}
