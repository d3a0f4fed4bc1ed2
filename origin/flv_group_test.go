package origin

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
)

// TestHTTPFLVGroupWriters: caught-up HTTP-FLV players are served by the
// stream's group writers and get exactly the bytes av.AppendTag makes; a
// player that stops reading (its socket fills) leaves for a goroutine of
// its own and still gets every byte once it reads again; when the stream
// ends every player's response ends.
func TestHTTPFLVGroupWriters(t *testing.T) {
	cfg := flvConfig()
	cfg.ReaderQueue = 4096 // the stalled player is not skipped
	cfg.MaxLag = 30 * time.Second
	cfg.FLVCoalesce = 40 * time.Millisecond
	h, srv, f := servedFeed(t, cfg)
	frame := func(i int) *av.Packet {
		d := make([]byte, 60000+i%7*1000)
		for k := range d {
			d[k] = byte(i + k*3)
		}
		return &av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, Key: i%30 == 0, DTS: ms(40 * i), CTS: ms(80), Data: d}
	}
	cached := []*av.Packet{metaPkt(), avcHdr(1), aacHdr(), frame(0)}
	for _, p := range cached {
		f.WritePacket(p)
	}
	want := av.FLVHeader(true, true)
	for _, p := range cached {
		want = av.AppendTag(want, p)
	}

	const fast = 6
	type player struct {
		got  chan []byte
		conn net.Conn
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	open := func() player {
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET /live/cam.flv HTTP/1.1\r\nHost: x\r\n\r\n")
		return player{got: make(chan []byte, 1), conn: c}
	}
	read := func(p player, stall <-chan struct{}) {
		br := bufio.NewReader(p.conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			p.got <- nil
			return
		}
		defer resp.Body.Close()
		if stall != nil {
			<-stall // stop reading: the socket fills
		}
		b, _ := io.ReadAll(resp.Body)
		p.got <- b
	}
	var players []player
	for range fast {
		p := open()
		players = append(players, p)
		go read(p, nil)
	}
	stall := make(chan struct{})
	slow := open()
	go read(slow, stall)
	defer func() {
		for _, p := range append(players, slow) {
			p.conn.Close()
		}
	}()

	s, err := h.stream("live", "cam")
	if err != nil {
		t.Fatal(err)
	}
	grouped := func() int {
		s.mu.Lock()
		defer s.mu.Unlock()
		n := 0
		for _, r := range s.readers {
			if r.grp.Load() != nil {
				n++
			}
		}
		return n
	}
	maxGrouped := 0
	for i := 1; i <= 150; i++ { // about 9 MB: more than the stalled socket and its sender hold
		p := frame(i)
		f.WritePacket(p)
		f.WritePacket(aud(40*i + 10))
		want = av.AppendTag(want, p)
		want = av.AppendTag(want, aud(40*i+10))
		time.Sleep(2 * time.Millisecond)
		maxGrouped = max(maxGrouped, grouped())
	}
	if maxGrouped < fast+1 {
		t.Errorf("at most %d of %d caught-up players were served by group writers at once", maxGrouped, fast+1)
	}
	if n := grouped(); n > fast {
		t.Errorf("%d players in groups while one stalls with a full socket, want at most %d", n, fast)
	}
	close(stall)
	time.Sleep(200 * time.Millisecond)
	if err := h.Kick("live", "cam"); err != nil {
		t.Fatal(err)
	}
	for i, p := range append(players, slow) {
		select {
		case got := <-p.got:
			if !bytes.Equal(got, want) {
				n := 0
				for n < len(got) && n < len(want) && got[n] == want[n] {
					n++
				}
				t.Errorf("player %d (stalled: %v): %d bytes, want %d; first difference at %d", i, i == fast, len(got), len(want), n)
			}
		case <-ctx.Done():
			_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
			t.Fatalf("player %d: the response did not end with the stream", i)
		}
	}
}
