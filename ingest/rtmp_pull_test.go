package ingest

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
)

func TestParseRTMPPullURL(t *testing.T) {
	tests := []struct {
		src                    string
		host, app, name, tcURL string
		err                    string
	}{
		{src: "rtmp://example.com/live/cam1", host: "example.com:1935", app: "live", name: "cam1", tcURL: "rtmp://example.com:1935/live"},
		{src: "rtmp://10.0.0.1:1936/app/inst/cam?key=s", host: "10.0.0.1:1936", app: "app/inst", name: "cam?key=s", tcURL: "rtmp://10.0.0.1:1936/app/inst"},
		{src: "rtmp://[::1]/live/x/", host: "[::1]:1935", app: "live", name: "x", tcURL: "rtmp://[::1]:1935/live"},
		{src: "rtmps://example.com/live/cam1", err: "scheme"},
		{src: "rtmp://example.com/cam1", err: "want /app/name"},
		{src: "rtmp:///live/cam1", err: "no host"},
		{src: "rtmp://user:secret@example.com/live", err: "want /app/name"},
	}
	for _, tt := range tests {
		got, err := parseRTMPPullURL(tt.src)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: error %v, want %q", tt.src, err, tt.err)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("%s: error shows the password: %v", tt.src, err)
			}
			continue
		}
		if err != nil || got.host != tt.host || got.app != tt.app || got.name != tt.name || got.tcURL != tt.tcURL {
			t.Errorf("%s: got %+v, %v", tt.src, got, err)
		}
	}
}

// rtmp pull: runRTMPPull plays a stream from our own RTMP server.
func TestRTMPPull(t *testing.T) {
	clip := rtmpClip(t, 2)
	ref := rtmpReadClip(t, clip)
	tests := []struct {
		name    string
		path    string
		endErr  error // the served stream ends with it
		kick    bool  // the origin drops the feed once media flowed
		cancel  bool  // ctx is cancelled once media flowed
		wantErr string
		wantAll bool
	}{
		{name: "cancelled", path: "/live/demo", cancel: true, wantErr: context.Canceled.Error(), wantAll: true},
		{name: "remote stream ends", path: "/live/demo", endErr: errors.New("gone"), wantAll: true},
		{name: "feed dropped", path: "/live/demo", kick: true, wantErr: "feed dropped"},
		{name: "unknown stream", path: "/live/none", wantErr: "NetStream.Play.StreamNotFound"},
		{name: "play refused", path: "/live/demo?auth_key=bad", wantErr: "NetStream.Play.Failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			play := &rtmpFakePlay{streams: map[string][]*av.Packet{"live/demo": ref}, endErr: tt.endErr}
			auth := &rtmpFakeAuth{}
			if strings.Contains(tt.path, "auth_key") {
				auth.playKey = "good"
			}
			s, _ := rtmpTestServer(t, RTMPConfig{}, Deps{Sink: newRTMPFakeSink(), Auth: auth, Play: play}, nil)
			_, log := newRTMPLogs(t)
			w := &rtmpFakeWriter{done: make(chan struct{})}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- runRTMPPull(ctx, rtmpURL(s, tt.path), w, log, nil) }()
			if tt.kick || tt.cancel {
				rtmpWaitFor(t, 10*time.Second, "media", func() bool { return w.count() >= len(ref) || (tt.kick && w.count() > 0) })
				if tt.kick {
					w.kick()
				} else {
					cancel()
				}
			}
			var err error
			select {
			case err = <-errc:
			case <-time.After(15 * time.Second):
				t.Fatal("runRTMPPull did not return")
			}
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("runRTMPPull: %v, want error %q", err, tt.wantErr)
			}
			if tt.wantAll {
				got := w.packets()
				if len(got) != len(ref) {
					t.Fatalf("pulled %d packets, the stream has %d", len(got), len(ref))
				}
				for i := range ref {
					if err := rtmpSamePacket(got[i], ref[i]); err != nil {
						t.Fatalf("packet %d (%v): %v", i, ref[i].Kind, err)
					}
				}
			}
			if rs := play.all(); len(rs) == 1 {
				rtmpWaitFor(t, 5*time.Second, "server-side reader closed", rs[0].isClosed)
			}
		})
	}
}

// slowWriter is a pull's feed that takes its time over each packet, as a
// player on a busy machine does.
type slowWriter struct {
	*rtmpFakeWriter
	delay time.Duration
}

func (w slowWriter) WritePacket(p *av.Packet) {
	time.Sleep(w.delay)
	w.rtmpFakeWriter.WritePacket(p)
}

// TestRTMPPlayEndsToSlowPlayer: a stream that ends while its player is
// still seconds behind (the socket buffers full of media) still ends with
// Play.Stop, not a reset, even when the player sends an acknowledgement
// after the server's linger would have run out. The server closes the
// socket only once the player has taken everything.
func TestRTMPPlayEndsToSlowPlayer(t *testing.T) {
	const n, size = 60, 64 << 10 // ~3.9 MB: past the 2.5 MB acknowledgement window
	pkts := make([]*av.Packet, 0, n)
	for i := range n {
		data := make([]byte, size)
		binary.BigEndian.PutUint32(data, size-4)
		data[4] = 0x65 // an IDR slice
		pkts = append(pkts, &av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, Key: true, DTS: time.Duration(i) * 40 * time.Millisecond, Data: data})
	}
	play := &rtmpFakePlay{streams: map[string][]*av.Packet{"live/demo": pkts}, endErr: errors.New("gone")}
	s, _ := rtmpTestServer(t, RTMPConfig{}, Deps{Sink: newRTMPFakeSink(), Auth: &rtmpFakeAuth{}, Play: play}, nil)
	_, log := newRTMPLogs(t)
	// 60 ms a packet: 3.6 s to read what the server wrote at once, more
	// than rtmpLinger after its half-close.
	w := slowWriter{rtmpFakeWriter: &rtmpFakeWriter{done: make(chan struct{})}, delay: 60 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := runRTMPPull(ctx, rtmpURL(s, "/live/demo"), w, log, nil); err != nil {
		t.Fatalf("runRTMPPull: %v, want the remote stream to end cleanly", err)
	}
	if got := len(w.packets()); got != n {
		t.Fatalf("pulled %d packets, the stream has %d", got, n)
	}
}
