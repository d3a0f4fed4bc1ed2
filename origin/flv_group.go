package origin

import (
	"runtime"
	"sync"
)

// flvGroup is one of a stream's group writers: a goroutine that serves the
// caught-up players given to it in turn, each with a write that does not
// wait (HTTP-FLV: flvPlay.step; RTMP: ingest's player, through
// Reader.JoinGroup). A player that is woken (a new batch, its
// end) is put on the group's list instead of waking a goroutine of its
// own, so a frame costs one wake-up per group rather than one per player.
// A player whose socket fills leaves for a goroutine of its own, which
// waits (with the deadline) and may come back once it has caught up.
//
// A stream has one group per core (GOMAXPROCS), so its players are still
// written by every core. A group's goroutine ends when it has no players.
type flvGroup struct {
	mu      sync.Mutex
	ready   []*Reader
	spare   []*Reader
	members int
	running bool
	wake    chan struct{}
}

// joinFLVGroup gives r (an HTTP-FLV player's reader, its step set, caught
// up) to one of s's group writers; false when the stream has ended.
func (s *Stream) joinFLVGroup(r *Reader) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	if s.groups == nil {
		s.groups = make([]*flvGroup, runtime.GOMAXPROCS(0))
	}
	i := s.nextGroup % len(s.groups)
	s.nextGroup++
	g := s.groups[i]
	if g == nil {
		g = &flvGroup{wake: make(chan struct{}, 1)}
		s.groups[i] = g
	}
	s.mu.Unlock()
	g.mu.Lock()
	g.members++
	if !g.running {
		g.running = true
		go g.run()
	}
	g.mu.Unlock()
	r.grp.Store(g)
	r.signal() // what was queued since the player's last look
	return true
}

// leaveFLVGroup takes r out of its group: from now on it is woken through
// its own channel. Called from the group's goroutine, in r's step.
func (s *Stream) leaveFLVGroup(r *Reader) {
	g := r.grp.Swap(nil)
	if g == nil {
		return
	}
	g.mu.Lock()
	g.members--
	g.mu.Unlock()
	g.kick()
}

func (g *flvGroup) enqueue(r *Reader) {
	g.mu.Lock()
	g.ready = append(g.ready, r)
	g.mu.Unlock()
	g.kick()
}

func (g *flvGroup) kick() {
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// run serves the players put on the list until the group has none.
func (g *flvGroup) run() {
	for range g.wake {
		g.mu.Lock()
		list := g.ready
		g.ready = g.spare[:0]
		if len(list) == 0 && g.members == 0 {
			g.running = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		for i, r := range list {
			list[i] = nil
			r.listed.Store(false)
			switch cur := r.grp.Load(); cur {
			case g:
				r.step()
			case nil: // left: its own goroutine looks at its queue first
			default:
				// Left and joined another group while listed here: its
				// wake-up then could not be listed there.
				r.signal()
			}
		}
		g.spare = list[:0]
	}
}

// JoinGroup gives r, caught up, to one of its stream's group writers, as
// HTTP-FLV players are given (an RTMP player's writer in ingest): from now
// on step is called, from the group's goroutine, whenever r may have
// packets or its state changed, instead of a ReadPackets call waking.
// step must not wait: it takes what is queued (Poll), writes what the
// socket takes, and leaves (LeaveGroup) to wait in a goroutine of its own.
// False, and r stays with its caller, when packets are queued or the
// stream has ended.
func (r *Reader) JoinGroup(step func()) bool {
	if r.queued() != 0 {
		return false
	}
	r.step = step
	return r.s.joinFLVGroup(r)
}

// LeaveGroup takes r out of its group writer: from now on ReadPackets
// waits for it. Called from step.
func (r *Reader) LeaveGroup() { r.s.leaveFLVGroup(r) }

// StepDone ends a group turn that wrote everything: a reader that is no
// longer active (its stream ended, or it was closed) gets one more turn,
// in which Poll returns the end.
func (r *Reader) StepDone() {
	if r.state.Load() != stateActive {
		r.signal()
	}
}
