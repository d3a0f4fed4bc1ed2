package origin

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func metaPkt() *av.Packet {
	return &av.Packet{Kind: av.KindData, Data: av.EncodeScript("onMetaData", map[string]any{"width": 640.0})}
}

func avcHdr(b byte) *av.Packet {
	return &av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, Header: true, Key: true, Data: []byte{1, 0x64, 0, 0x1e, b}}
}

func aacHdr() *av.Packet {
	return &av.Packet{Kind: av.KindAudio, Codec: av.CodecAAC, Header: true, Data: []byte{0x12, 0x10}}
}

func vid(dts int, key bool) *av.Packet {
	nal := byte(0x41)
	if key {
		nal = 0x65
	}
	return &av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, Key: key, DTS: ms(dts), Data: []byte{0, 0, 0, 2, nal, byte(dts)}}
}

func aud(dts int) *av.Packet {
	return &av.Packet{Kind: av.KindAudio, Codec: av.CodecAAC, DTS: ms(dts), Data: []byte{0x21, byte(dts)}}
}

// drain reads what is queued without waiting.
func drain(r *Reader) []*av.Packet { return r.poll(nil) }

func kinds(ps []*av.Packet) string {
	s := ""
	for _, p := range ps {
		switch {
		case p.Kind == av.KindData:
			s += "M"
		case p.Kind == av.KindVideo && p.Header:
			s += "V"
		case p.Kind == av.KindAudio && p.Header:
			s += "A"
		case p.Kind == av.KindVideo && p.Key:
			s += "K"
		case p.Kind == av.KindVideo:
			s += "p"
		case p.Kind == av.KindAudio:
			s += "a"
		}
	}
	return s
}

func TestStreamOrder(t *testing.T) {
	for _, queue := range []int{1, 16, 1024} {
		t.Run(fmt.Sprint("queue=", queue), func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.ReaderQueue = queue
			s := NewStream(cfg, nil)
			r := s.Subscribe()
			defer r.Close()
			var want []*av.Packet
			ctx := context.Background()
			var got []*av.Packet
			for i := 0; i < 500; i++ {
				var p *av.Packet
				switch {
				case i%30 == 0:
					p = vid(i*10, true)
				case i%3 == 0:
					p = aud(i * 10)
				default:
					p = vid(i*10, false)
				}
				s.Write(p)
				want = append(want, p)
				var err error
				if got, err = r.ReadPackets(ctx, got); err != nil {
					t.Fatal(err)
				}
			}
			if len(got) != len(want) {
				t.Fatalf("got %d packets, want %d", len(got), len(want))
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("packet %d out of order", i)
				}
			}
		})
	}
}

// TestStreamJoin checks what a new reader gets first.
func TestStreamJoin(t *testing.T) {
	cases := []struct {
		name   string
		writes []*av.Packet
		cfg    func(*Config)
		after  []*av.Packet // written after the reader joined
		want   string       // kinds the reader gets, in order
	}{
		{
			name:   "mid-gop",
			writes: []*av.Packet{metaPkt(), avcHdr(1), aacHdr(), vid(0, true), aud(10), vid(40, false), vid(80, true), aud(90), vid(120, false)},
			after:  []*av.Packet{vid(160, false)},
			want:   "MVAKapp",
		},
		{
			name:   "before the first keyframe",
			writes: []*av.Packet{avcHdr(1), aacHdr(), vid(0, false), aud(10)},
			after:  []*av.Packet{vid(40, false), aud(50), vid(80, true), vid(120, false)},
			want:   "VAaKp",
		},
		{
			name:  "nothing yet",
			after: []*av.Packet{metaPkt(), avcHdr(1), vid(0, false), vid(40, true)},
			want:  "MVK",
		},
		{
			name:   "audio only",
			writes: []*av.Packet{metaPkt(), aacHdr(), aud(0), aud(23)},
			after:  []*av.Packet{aud(46)},
			want:   "MAa",
		},
		{
			name:   "gop longer than the cache",
			cfg:    func(c *Config) { c.GOPCachePackets = 3 },
			writes: []*av.Packet{avcHdr(1), vid(0, true), vid(40, false), vid(80, false), vid(120, false)},
			after:  []*av.Packet{vid(160, false), vid(200, true), vid(240, false)},
			want:   "VKp",
		},
		{
			name:   "gop larger than the byte bound",
			cfg:    func(c *Config) { c.GOPCacheBytes = 10 },
			writes: []*av.Packet{avcHdr(1), vid(0, true), vid(40, false)},
			after:  []*av.Packet{vid(80, false), vid(120, true)},
			want:   "VK",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			s := NewStream(cfg, nil)
			for _, p := range tc.writes {
				s.Write(p)
			}
			r := s.Subscribe()
			defer r.Close()
			for _, p := range tc.after {
				s.Write(p)
			}
			if got := kinds(drain(r)); got != tc.want {
				t.Fatalf("reader got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestStreamNeverReads: a reader that never reads does not block Write and
// ends up dropped.
func TestStreamNeverReads(t *testing.T) {
	s := NewStream(DefaultConfig(), nil)
	stuck := s.Subscribe()
	defer stuck.Close()
	good := s.Subscribe()
	defer good.Close()
	s.Write(avcHdr(1))
	good.poll(nil)
	var got []*av.Packet
	for i := 0; i < 100_000; i++ {
		s.Write(vid(i*40, i%30 == 0))
		got = good.poll(got[:0])
		if len(got) != 1 {
			t.Fatalf("packet %d: the reading reader got %d packets, want 1", i, len(got))
		}
	}
	if _, err := stuck.ReadPackets(context.Background(), nil); !errors.Is(err, ErrDropped) {
		t.Fatalf("stuck reader: %v, want ErrDropped", err)
	}
	if st := s.Status(); st.DroppedReaders != 1 || st.InternalReaders != 1 || st.Readers != 0 {
		t.Fatalf("status: %d dropped, %d internal readers, %d players; want 1, 1, 0", st.DroppedReaders, st.InternalReaders, st.Readers)
	}
}

// TestStreamLagRecovers: a reader that overflows skips to the next keyframe
// and gets changed sequence headers again before it.
func TestStreamLagRecovers(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ReaderQueue = 8
	s := NewStream(cfg, nil)
	s.Write(avcHdr(1))
	s.Write(aacHdr())
	s.Write(vid(0, true))
	r := s.Subscribe()
	defer r.Close()
	// The burst (V A K) and 8 more packets fill the queue (limit 8+3).
	for i := 1; i <= 8; i++ {
		s.Write(vid(i*40, false))
	}
	s.Write(vid(9*40, false)) // overflow: skip from here
	s.Write(aud(9 * 40))
	s.Write(avcHdr(2)) // new headers while skipping
	first := drain(r)
	if got := kinds(first); got != "VAKpppppppp" {
		t.Fatalf("before the overflow: %q", got)
	}
	s.Write(vid(10*40, false))
	s.Write(aud(10 * 40))
	s.Write(vid(11*40, true))
	s.Write(aud(11 * 40))
	after := drain(r)
	if got := kinds(after); got != "VAKa" {
		t.Fatalf("after the overflow: %q, want headers then the keyframe", got)
	}
	if after[0].Data[4] != 2 || after[2].DTS != ms(440) {
		t.Fatalf("resumed with the wrong header or keyframe")
	}
}

// TestStreamDropRules covers the two ways a lagging reader is dropped.
func TestStreamDropRules(t *testing.T) {
	cases := []struct {
		name string
		cfg  func(*Config)
		// writes after the queue overflowed once
		writes []*av.Packet
		drop   bool
	}{
		{"behind past max lag", func(c *Config) { c.MaxLag = time.Nanosecond }, []*av.Packet{vid(1000, false)}, true},
		{"behind within max lag", func(c *Config) { c.MaxLag = time.Hour }, []*av.Packet{vid(1000, false)}, false},
		{"overflows", func(c *Config) { c.MaxOverflows = 2 }, []*av.Packet{vid(1000, true), vid(1040, true)}, true},
		{"overflows within limit", func(c *Config) { c.MaxOverflows = 3 }, []*av.Packet{vid(1000, true), vid(1040, true)}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.ReaderQueue = 4
			tc.cfg(&cfg)
			s := NewStream(cfg, nil)
			r := s.Subscribe()
			defer r.Close()
			for i := 0; i < 5; i++ { // 4 fit, the 5th overflows
				s.Write(vid(i*40, i == 0))
			}
			for _, p := range tc.writes {
				s.Write(p)
			}
			_, err := r.ReadPackets(context.Background(), nil)
			if dropped := errors.Is(err, ErrDropped); dropped != tc.drop {
				t.Fatalf("dropped %v (err %v), want %v", dropped, err, tc.drop)
			}
		})
	}
}

func TestStreamClose(t *testing.T) {
	s := NewStream(DefaultConfig(), nil)
	r := s.Subscribe()
	defer r.Close()
	s.Write(vid(0, true))
	s.Write(vid(40, false))
	s.Close()
	s.Write(vid(80, false)) // ignored
	got, err := r.ReadPackets(context.Background(), nil)
	if err != nil || kinds(got) != "Kp" {
		t.Fatalf("after close: %q %v, want the queued packets first", kinds(got), err)
	}
	if _, err := r.ReadPackets(context.Background(), nil); !errors.Is(err, ErrEnded) {
		t.Fatalf("after close: %v, want ErrEnded", err)
	}
	late := s.Subscribe()
	if _, err := late.ReadPackets(context.Background(), nil); !errors.Is(err, ErrEnded) {
		t.Fatalf("subscribe after close: %v, want ErrEnded", err)
	}
}

// TestReaderCloseWakes: Close from another goroutine ends a waiting read.
func TestReaderCloseWakes(t *testing.T) {
	s := NewStream(DefaultConfig(), nil)
	r := s.Subscribe()
	errc := make(chan error, 1)
	go func() {
		_, err := r.ReadPackets(context.Background(), nil)
		errc <- err
	}()
	r.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrReaderClosed) {
			t.Fatalf("got %v, want ErrReaderClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ReadPackets did not return after Close")
	}
	if st := s.Status(); st.Readers != 0 {
		t.Fatalf("%d readers after Close", st.Readers)
	}
}

// TestStreamConcurrentReaders runs readers in parallel with the writer
// (meant for -race): each sees packets in order, and after any gap the
// first packet is a keyframe.
func TestStreamConcurrentReaders(t *testing.T) {
	for _, queue := range []int{64, 1024} { // 64: some readers skip; 1024: rings grow while read
		t.Run(fmt.Sprint("queue=", queue), func(t *testing.T) { testConcurrentReaders(t, queue) })
	}
}

func testConcurrentReaders(t *testing.T, queue int) {
	cfg := DefaultConfig()
	cfg.ReaderQueue = queue
	s := NewStream(cfg, nil)
	const packets = 20_000
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	start := make(chan struct{})
	for i := 0; i < 8; i++ {
		r := s.Subscribe()
		wg.Add(1)
		go func(slow bool) {
			defer wg.Done()
			defer r.Close()
			<-start
			var buf []*av.Packet
			last := -1
			for {
				var err error
				buf, err = r.ReadPackets(context.Background(), buf[:0])
				for _, p := range buf {
					n := int(p.DTS / time.Millisecond)
					if n <= last {
						errs <- fmt.Errorf("packet %d after %d", n, last)
						return
					}
					if n != last+1 && !p.Key {
						errs <- fmt.Errorf("gap %d -> %d resumes on a non-keyframe", last, n)
						return
					}
					last = n
				}
				if err != nil {
					if !errors.Is(err, ErrEnded) && !errors.Is(err, ErrDropped) {
						errs <- err
					}
					return
				}
				if slow {
					time.Sleep(50 * time.Microsecond)
				}
			}
		}(i%2 == 1)
	}
	close(start)
	for i := 0; i < packets; i++ {
		s.Write(&av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, Key: i%30 == 0, DTS: ms(i)})
	}
	s.Close()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestRateWindow(t *testing.T) {
	cases := []struct {
		name    string
		adds    []time.Duration // one 1000-byte frame at each
		now     time.Duration
		fps     float64
		bitrate int64
	}{
		{"empty", nil, 3 * time.Second, 0, 0},
		{"steady 10 fps", every(100*time.Millisecond, 100), 10 * time.Second, 10, 80_000},
		{"young stream", every(100*time.Millisecond, 10), time.Second, 10, 80_000},
		{"went quiet", every(100*time.Millisecond, 10), 20 * time.Second, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var w rateWindow
			for _, at := range tc.adds {
				w.add(at, 1000, 1)
			}
			fps, bps := w.rates(tc.now)
			if fps < tc.fps*0.95 || fps > tc.fps*1.05 || float64(bps) < float64(tc.bitrate)*0.95 || float64(bps) > float64(tc.bitrate)*1.05 {
				t.Fatalf("fps %.2f bitrate %d, want about %.2f and %d", fps, bps, tc.fps, tc.bitrate)
			}
		})
	}
}

func every(d time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = time.Duration(i) * d
	}
	return out
}

// FuzzStreamWrite writes packets built from arbitrary bytes (as a
// publisher may send them) and reads them back: nothing may panic.
func FuzzStreamWrite(f *testing.F) {
	f.Add([]byte{0x17, 0, 1, 0x64, 0, 0x1e, 0xff, 0xe1, 0, 4, 0x67, 0x64, 0, 0x1e}, []byte{0x12, 0x10})
	f.Add([]byte{2, 0, 10, 'o', 'n', 'M', 'e', 't', 'a', 'D', 'a', 't', 'a'}, []byte{})
	f.Add([]byte{}, []byte{0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, video, audio []byte) {
		cfg := DefaultConfig()
		cfg.ReaderQueue = 4
		s := NewStream(cfg, nil)
		r := s.Subscribe()
		defer r.Close()
		ps := []*av.Packet{
			{Kind: av.KindData, Data: video},
			{Kind: av.KindData, Data: audio},
			{Kind: av.KindVideo, Codec: av.CodecH264, Header: true, Data: video},
			{Kind: av.KindAudio, Codec: av.CodecAAC, Header: true, Data: audio},
			{Kind: av.KindVideo, Codec: av.CodecH264, Key: true, Data: video},
			{Kind: av.KindAudio, Codec: av.CodecAAC, Data: audio},
			{Kind: av.Kind(len(video)), Data: audio},
		}
		for _, p := range ps {
			s.Write(p)
			s.Subscribe().Close()
		}
		_ = s.Status()
		_ = s.metaPacket(0)
		drain(r)
	})
}

// TestStreamInternalReaderSkips: the HLS packager's reader is never
// dropped; it skips to keyframes instead.
func TestStreamInternalReaderSkips(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ReaderQueue = 4
	cfg.MaxOverflows = 1
	cfg.MaxLag = time.Nanosecond
	s := NewStream(cfg, nil)
	r := s.subscribe(true, roleInternal)
	defer r.Close()
	for i := 0; i < 100; i++ {
		s.Write(vid(i*40, i%10 == 0))
	}
	got := drain(r)
	if len(got) == 0 || r.state.Load() != stateActive {
		t.Fatalf("internal reader: %d packets, state %d", len(got), r.state.Load())
	}
	s.Write(vid(4000, true))
	if got := drain(r); kinds(got) != "K" {
		t.Fatalf("after draining: %q, want the next keyframe", kinds(got))
	}
	if st := s.Status(); st.DroppedReaders != 0 || st.Readers != 0 {
		t.Fatalf("status %+v", st)
	}
}

// TestHoldAudio: a reader that holds audio is woken for video (and gets
// the audio queued before it in the same read), for audio held longer
// than the window, and for every packet of an audio-only stream.
func TestHoldAudio(t *testing.T) {
	woken := func(r *Reader) bool {
		select {
		case <-r.wake:
			return true
		default:
			return false
		}
	}
	s := NewStream(DefaultConfig(), nil)
	s.Write(avcHdr(1))
	s.Write(vid(0, true))
	r := s.Subscribe()
	defer r.Close()
	// Shorter than the 40 ms between frames: video never waits.
	r.holdAudio(30 * time.Millisecond)
	if got := kinds(drain(r)); got != "VK" {
		t.Fatalf("start: %q", got)
	}
	woken(r)
	s.Write(aud(10))
	s.Write(aud(30))
	if woken(r) {
		t.Fatal("woken for audio")
	}
	s.Write(vid(40, false))
	if !woken(r) {
		t.Fatal("not woken for video")
	}
	if got := kinds(drain(r)); got != "aap" {
		t.Fatalf("after video: %q, want the held audio with it", got)
	}
	s.Write(aud(50))
	time.Sleep(40 * time.Millisecond)
	if woken(r) {
		t.Fatal("woken for audio")
	}
	s.Write(aud(70))
	if !woken(r) {
		t.Fatal("audio held past the window")
	}
	if got := kinds(drain(r)); got != "aa" {
		t.Fatalf("after the window: %q", got)
	}

	// Longer than two frame steps: frames wait too while the next one is
	// due within the window of the oldest packet waiting.
	s.Write(vid(80, false)) // the step is 40 ms
	r.holdAudio(100 * time.Millisecond)
	drain(r)
	woken(r)
	s.Write(vid(120, false))
	s.Write(aud(130))
	s.Write(vid(160, false))
	if woken(r) {
		t.Fatal("woken for a frame within the window")
	}
	time.Sleep(70 * time.Millisecond)
	s.Write(vid(200, false)) // 70 ms + the next step > 100 ms: written now
	if !woken(r) {
		t.Fatal("not woken when the next frame would be late")
	}
	if got := kinds(drain(r)); got != "papp" {
		t.Fatalf("batch %q, want the frames and audio held", got)
	}

	a := NewStream(DefaultConfig(), nil)
	a.Write(aacHdr())
	ra := a.Subscribe()
	defer ra.Close()
	ra.holdAudio(time.Second)
	drain(ra)
	woken(ra)
	a.Write(aud(0))
	if !woken(ra) {
		t.Fatal("audio-only stream: not woken for audio")
	}
}

// TestReaderRingGrows: a reader's ring starts small and grows, keeping
// order, up to its queue limit for a reader that does not read; a reader
// that keeps up keeps a small ring.
func TestReaderRingGrows(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ReaderQueue = 1000
	s := NewStream(cfg, nil)
	idle, keeps := s.Subscribe(), s.Subscribe()
	defer idle.Close()
	defer keeps.Close()
	var want, got []*av.Packet
	for i := range 1000 {
		p := vid(i, i%60 == 0)
		s.Write(p)
		want = append(want, p)
		got = keeps.poll(got[:0])
		if len(got) != 1 || got[0] != p {
			t.Fatalf("packet %d: the reader that keeps up got %d packets", i, len(got))
		}
	}
	if len(keeps.ring) != ringMin {
		t.Errorf("ring of a reader that keeps up: %d slots, want %d", len(keeps.ring), ringMin)
	}
	if len(idle.ring) != 1024 {
		t.Errorf("ring of a reader 1000 packets behind: %d slots, want 1024", len(idle.ring))
	}
	got = idle.poll(nil)
	if len(got) != len(want) {
		t.Fatalf("the reader behind got %d packets, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("packet %d out of order after the ring grew", i)
		}
	}
	p := vid(1000, false)
	s.Write(p) // the reader has caught up: its ring is given back
	if q := idle.queued(); q != 1 {
		t.Fatalf("%d queued after reading all, want 1", q)
	}
	if len(idle.ring) != ringMin {
		t.Errorf("ring of a reader that caught up: %d slots, want %d", len(idle.ring), ringMin)
	}
	if got = idle.poll(got[:0]); len(got) != 1 || got[0] != p {
		t.Fatalf("after the ring was given back the reader got %d packets", len(got))
	}
	// Once only: falling behind again grows it, and it is kept.
	for i := range 200 {
		s.Write(vid(1001+i, false))
	}
	idle.poll(nil)
	s.Write(vid(1201, false))
	if len(idle.ring) != 256 {
		t.Errorf("ring of a reader that fell behind twice: %d slots, want 256 (kept)", len(idle.ring))
	}
}

// TestReaderRingAfterBurst: a player that joins gets the cached GOP in a
// ring sized for it, and once it has taken the burst the ring is given
// back, with nothing lost.
func TestReaderRingAfterBurst(t *testing.T) {
	s := NewStream(DefaultConfig(), nil)
	s.Write(avcHdr(1))
	for i := range 200 {
		s.Write(vid(i, i == 0))
	}
	r := s.Subscribe()
	defer r.Close()
	if len(r.ring) < 200 {
		t.Fatalf("ring of a reader joining with a 200-packet GOP: %d slots", len(r.ring))
	}
	if got := r.poll(nil); len(got) != 201 {
		t.Fatalf("burst: %d packets, want the header and 200 frames", len(got))
	}
	for i := 200; i < 210; i++ {
		p := vid(i, false)
		s.Write(p)
		if got := r.poll(nil); len(got) != 1 || got[0] != p {
			t.Fatalf("frame %d after the burst: got %d packets", i, len(got))
		}
	}
	if len(r.ring) != ringMin {
		t.Errorf("ring after the burst was taken: %d slots, want %d", len(r.ring), ringMin)
	}
}
