package cdnmix

import (
	"math"
	"sync"
	"sync/atomic"
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

// budget counts the viewers a capacity pool may still take under one
// plan. Several buckets share one budget.
type budget struct {
	left    atomic.Int64
	granted int64 // initial value of left
	carried int64 // taken under earlier plans built on the same observations
}

func (b *budget) taken() int64 { return b.granted - max(b.left.Load(), 0) }

// next returns the vendor index of the next pick for n viewers, or -1 when
// no peer is left. budgets, indexed by vendor (nil, or a nil entry: no
// limit), are checked and charged n: a peer whose budget is spent is
// skipped as nginx skips a peer that is down, and the others keep their
// ratios. A budget may go below zero by up to n-1 plus concurrent picks.
func (w *wrr) next(budgets []*budget, n int64) int {
	if len(w.peers) == 0 {
		return -1
	}
	w.mu.Lock()
	best := -1
	var total int64
	for i, p := range w.peers {
		if budgets != nil && budgets[p] != nil && budgets[p].left.Load() <= 0 {
			continue
		}
		w.cur[i] += w.weight[i]
		total += w.weight[i]
		if best < 0 || w.cur[i] > w.cur[best] {
			best = i
		}
	}
	if best < 0 {
		w.mu.Unlock()
		return -1
	}
	w.cur[best] -= total
	p := w.peers[best]
	w.mu.Unlock()
	if budgets != nil && budgets[p] != nil {
		budgets[p].left.Add(-n)
	}
	return p
}
