package origin

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
	"github.com/livefuse/livefuse/encryption"
)

// media6M returns one second of a 6 Mbit/s stream: 25 video frames (a
// keyframe at every second frame of 50, i.e. a 2 s GOP: the first call
// gives the keyframe) of about 29 KB and 43 AAC frames of 372 bytes.
func media6M(b *testing.B, sec int) []*av.Packet {
	var ps []*av.Packet
	for i := range 25 {
		n := 29000
		key := sec%2 == 0 && i == 0
		if key {
			n = 90000
		}
		nal := make([]byte, n)
		rand.Read(nal)
		nal[0] = 0x41
		if key {
			nal[0] = 0x65
		}
		dts := time.Duration(sec)*time.Second + time.Duration(i)*40*time.Millisecond
		ps = append(ps, &av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, Key: key, DTS: dts, Data: av.AppendAVCC(nil, [][]byte{nal})})
	}
	for i := range 43 {
		fr := make([]byte, 372)
		rand.Read(fr)
		dts := time.Duration(sec)*time.Second + time.Duration(i)*time.Second/43
		ps = append(ps, &av.Packet{Kind: av.KindAudio, Codec: av.CodecAAC, DTS: dts, Data: fr})
	}
	return ps
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkEncryptedFanout compares the CPU cost of one and of 500
// HTTP-FLV players of one 6 Mbit/s stream, clear and encrypted. Clear: the stream with an
// HLS packager (tshls, clear) and the readers, which encode every packet as
// an FLV tag, as serveFLV does. Encrypted: the same stream feeding the
// encrypted outputs (one encryption per packet for FLV, SAMPLE-AES HLS)
// and the readers of the encrypted FLV output doing the same, the
// onEncryption packets queued by the output's Stream. One op is one second of media; the
// writer waits until every reader has taken it, so no reader skips.
// cpu-ms/s-media is process CPU (all goroutines) per second of media.
func BenchmarkEncryptedFanout(b *testing.B) {
	for _, players := range []int{1, 500} {
		benchEncryptedFanout(b, players)
	}
}

func benchEncryptedFanout(b *testing.B, players int) {
	seconds := make([][]*av.Packet, 4)
	for i := range seconds {
		seconds[i] = media6M(b, i)
	}
	hdrs := []*av.Packet{testAVC(b, 0), {Kind: av.KindAudio, Codec: av.CodecAAC, Header: true, Data: []byte{0x12, 0x10}}}
	for _, mode := range []string{"clear", "encrypted"} {
		b.Run(fmt.Sprintf("%s/players=%d", mode, players), func(b *testing.B) {
			cfg := DefaultConfig()
			cfg.HLSVariant = HLSOff
			if mode == "encrypted" {
				cfg.Encryption.NewKey = hubKeys(&encryption.MemKeyStore{})
				cfg.HLSVariant = HLSMPEGTS // the packager encrypts too
			}
			hub, err := NewHub(cfg, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer hub.Close()
			if err := hub.SetStreamPolicy("live", "x", StreamPolicy{Encrypted: mode == "encrypted"}); err != nil {
				b.Fatal(err)
			}
			feed, err := hub.Publish("live", "x", FeedMain, av.Source{})
			if err != nil {
				b.Fatal(err)
			}
			for _, h := range hdrs {
				feed.WritePacket(h)
			}
			src, _ := hub.stream("live", "x")
			var out *Stream
			if mode == "clear" {
				out = src
				// The clear path's HLS packager.
				r := src.subscribe(true, roleInternal)
				p := newTSHLS(tshlsConfig{Stream: "live/x"})
				go func() {
					defer r.Close()
					var buf []*av.Packet
					for {
						var err error
						buf, err = r.ReadPackets(context.Background(), buf[:0])
						for _, q := range buf {
							p.writePacket(q)
						}
						if err != nil {
							return
						}
					}
				}()
			} else {
				out = cryptOf(hub, "live", "x").out
			}
			var taken atomic.Int64
			var wg sync.WaitGroup
			for range players {
				// A player: a Reader of the clear stream or of the
				// encrypted output.
				r := out.subscribe(false, roleFLV)
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer r.Close()
					buf := make([]*av.Packet, 0, 256)
					tag := make([]byte, 0, 128<<10)
					for {
						var err error
						buf, err = r.ReadPackets(context.Background(), buf[:0])
						n := 0
						for _, p := range buf {
							tag = av.AppendTag(tag[:0], p)
							if !p.Header && p.Kind != av.KindData {
								n++
							}
						}
						taken.Add(int64(n))
						if err != nil {
							return
						}
					}
				}()
			}
			want := int64(0)
			secs := 0
			write := func(sec []*av.Packet) {
				off := time.Duration(secs/len(seconds)*len(seconds)) * time.Second
				secs++
				for _, p := range sec {
					q := *p
					q.DTS += off
					feed.WritePacket(&q)
				}
				want += int64(len(sec) * players)
				for deadline := time.Now().Add(30 * time.Second); taken.Load() < want; {
					if time.Now().After(deadline) {
						b.Fatalf("readers took %d of %d packets", taken.Load(), want)
					}
					time.Sleep(50 * time.Microsecond)
				}
			}
			write(seconds[0]) // warm up: first keyframe, key, buffers
			b.ResetTimer()
			cpu0 := cpuTime()
			for i := 0; i < b.N; i++ {
				write(seconds[(i+1)%len(seconds)])
			}
			cpu := cpuTime() - cpu0
			b.StopTimer()
			b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/s-media")
			_ = hub.Kick("live", "x") // ends the stream (a closed feed would leave the slate playing)
			wg.Wait()
		})
	}
}
