package recording

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

const (
	benchStreams = 100
	// benchSegment is 6 s of a 6 Mbit/s stream.
	benchSegment = 6 * 6_000_000 / 8
)

// BenchmarkUpload100Streams uploads one 6 s segment of each of 100
// recorded 6 Mbit/s streams per op to a real MinIO: through the recorder
// (spool file, Content-MD5, confirming stat, playlist and manifest after
// each segment) and, for comparison in the same run, with a plain minio-go
// PutObject loop of the same bytes at the recorder's parallelism and at one
// goroutine per stream.
//
//	go test -run '^$' -bench Upload100Streams -benchtime 3x ./recording/
func BenchmarkUpload100Streams(b *testing.B) {
	mn := startMinio(b)
	sink := mn.makeBucket(b, "vod")
	data := make([]byte, benchSegment)
	rand.Read(data)
	sha, md := digests(data)

	b.Run("recorder", func(b *testing.B) {
		var uploaded atomic.Int64
		cfg := Config{DataDir: b.TempDir(), Sink: SinkS3, S3: mn.s3Config("vod")}
		r, err := New(cfg, Deps{Source: &testStream{}, Events: func(e Event) {
			if e.Type == EventSegmentUploaded {
				uploaded.Add(1)
			}
		}})
		if err != nil {
			b.Fatal(err)
		}
		if err := r.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		b.SetBytes(benchStreams * benchSegment)
		b.ResetTimer()
		var cpu time.Duration
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			sessions := make([]*session, benchStreams)
			for j := range sessions {
				s, err := r.newSession("live", fmt.Sprintf("s%03d", j), time.Now())
				if err != nil {
					b.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(s.dir, openSegment), data, 0o644); err != nil {
					b.Fatal(err)
				}
				sessions[j] = s
			}
			want := uploaded.Load() + benchStreams
			c0 := cpuTime()
			b.StartTimer()
			for _, s := range sessions {
				if err := s.addSegment(finished{path: filepath.Join(s.dir, openSegment), size: benchSegment,
					sha256: sha, md5: md, duration: 6 * time.Second, start: time.Now()}); err != nil {
					b.Fatal(err)
				}
			}
			for deadline := time.Now().Add(5 * time.Minute); uploaded.Load() < want; time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					b.Fatalf("uploads not done in 5 min: %v", r.SinkStatus())
				}
			}
			b.StopTimer()
			cpu += cpuTime() - c0
			for _, s := range sessions {
				s.end("")
			}
			for deadline := time.Now().Add(time.Minute); r.SinkStatus().Queued > 0 && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
			b.StartTimer()
		}
		reportCPU(b, cpu)
	})
	for _, par := range []int{DefaultConfig().Uploaders, benchStreams} {
		b.Run(fmt.Sprintf("putobject-%d", par), func(b *testing.B) {
			b.SetBytes(benchStreams * benchSegment)
			ctx := context.Background()
			c0 := cpuTime()
			for i := 0; i < b.N; i++ {
				next := make(chan int, benchStreams)
				for j := 0; j < benchStreams; j++ {
					next <- j
				}
				close(next)
				var wg sync.WaitGroup
				for w := 0; w < par; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for j := range next {
							key := fmt.Sprintf("plain/%d/s%03d/seg.ts", i, j)
							if _, err := sink.mc.PutObject(ctx, "vod", key, bytes.NewReader(data), benchSegment,
								minio.PutObjectOptions{ContentType: contentTypeTS}); err != nil {
								b.Error(err)
							}
						}
					}()
				}
				wg.Wait()
			}
			reportCPU(b, cpuTime()-c0)
		})
	}
}

// BenchmarkSegmenter is the CPU cost of recording one stream: the packets
// of a 10 s 640x360 clip (about 1.7 Mbit/s) cut into segments in a temp
// dir. cpu-ms/media-s is the process CPU time per second of media.
func BenchmarkSegmenter(b *testing.B) {
	c := makeClip(b, 10, "640x360")
	var bytesIn int64
	for _, p := range c.media {
		bytesIn += int64(len(p.Data))
	}
	dir := b.TempDir()
	b.SetBytes(bytesIn)
	b.ResetTimer()
	c0 := cpuTime()
	for i := 0; i < b.N; i++ {
		n := 0
		seg := &segmenter{target: 2 * time.Second,
			next: func() string { return filepath.Join(dir, openSegment) },
			done: func(f finished) error { n++; return os.Remove(f.path) }}
		now := time.Now()
		for _, p := range c.headers {
			seg.write(p, now)
		}
		for _, p := range c.media {
			if err := seg.write(p, now); err != nil {
				b.Fatal(err)
			}
		}
		if err := seg.finish(); err != nil {
			b.Fatal(err)
		}
		if n < 5 {
			b.Fatalf("%d segments", n)
		}
	}
	b.ReportMetric(float64((cpuTime()-c0).Microseconds())/1000/float64(b.N)/c.dur.Seconds(), "cpu-ms/media-s")
}

// cpuTime is the CPU time (user and system) of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the uploading side's CPU per recorded stream: CPU
// microseconds per second of one 6 Mbit/s stream (MinIO's own CPU is not
// counted; it runs in its own process).
func reportCPU(b *testing.B, cpu time.Duration) {
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N)/(benchStreams*6), "cpu-us/stream-s")
}
