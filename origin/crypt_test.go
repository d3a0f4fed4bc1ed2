package origin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
	"github.com/livefuse/livefuse/encryption"
)

// hubKeys is a Config.Encryption.NewKey over ks.
func hubKeys(ks *encryption.MemKeyStore) func(ctx context.Context, stream string) (*encryption.Key, error) {
	return func(ctx context.Context, stream string) (*encryption.Key, error) {
		return keySource(ks, stream)(ctx)
	}
}

// cryptOf returns the encrypted FLV output of live app/name (nil: none).
func cryptOf(h *Hub, app, name string) *cryptFLV {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e := h.streams[streamKey(app, name)]; e != nil {
		return e.crypt
	}
	return nil
}

// TestEncryptedToggle publishes synthetic media with an encrypted policy,
// toggles encryption through the policy while two HTTP-FLV players (one
// from the start, one joining late; both holding audio, flv_coalesce)
// read the stream: every player decrypts (encryption.Decryptor, keys
// from the store) to exactly the clear packets, so nothing clear follows
// an "encrypted" signal and nothing encrypted a "clear" one; each keyframe
// is preceded by an onEncryption tag, and the state follows the toggles.
// HLS gets METHOD=NONE and the key back at segment boundaries. Both
// players are counted as the stream's.
func TestEncryptedToggle(t *testing.T) {
	for _, all := range []bool{false, true} {
		t.Run(fmt.Sprintf("all=%v", all), func(t *testing.T) { testEncryptedToggle(t, all) })
	}
}

func testEncryptedToggle(t *testing.T, all bool) {
	cfg := DefaultConfig()
	cfg.HLSSegmentCount = 20
	ks := &encryption.MemKeyStore{}
	cfg.Encryption = EncryptionConfig{NewKey: hubKeys(ks), AllStreams: all}
	hub, err := NewHub(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	if err := hub.SetStreamPolicy("live", "x", StreamPolicy{Encrypted: true}); err != nil {
		t.Fatal(err)
	}
	setEnc := func(on bool) {
		if err := hub.SetStreamPolicy("live", "x", StreamPolicy{Encrypted: on}); err != nil {
			t.Error(err)
		}
	}
	feed, err := hub.Publish("live", "x", FeedMain, av.Source{Protocol: "test"})
	if err != nil {
		t.Fatal(err)
	}
	e := cryptOf(hub, "live", "x")
	if e == nil {
		t.Fatal("no encrypted output")
	}
	srv := httptest.NewServer(hub.Handler())
	defer srv.Close()

	ps := synthGOPs(t, 0, 12, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	type result struct {
		got  []*av.Packet
		sigs int
		err  error
	}
	play := func(out chan<- result) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/live/x.flv", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			out <- result{err: err}
			return
		}
		defer resp.Body.Close()
		r, err := av.NewFLVReader(resp.Body)
		if err != nil {
			out <- result{err: err}
			return
		}
		dec, _ := encryption.NewDecryptor(encryption.DecryptorConfig{Lookup: func(id string) (*encryption.Key, error) {
			return ks.Get(ctx, "live/x", id)
		}})
		var res result
		var buf []*av.Packet
		sawSig := false
		for {
			p, err := r.ReadPacket()
			if err != nil {
				if !errors.Is(err, context.Canceled) && !strings.Contains(err.Error(), "EOF") {
					res.err = err
				}
				out <- res
				return
			}
			if p.Kind == av.KindData && encryption.IsSignal(p.Data) {
				res.sigs++
				sawSig = true
			} else if p.Kind == av.KindVideo && p.Key && !p.Header {
				if !sawSig {
					res.err = errors.New("keyframe without an onEncryption tag before it")
				}
				sawSig = false
			}
			buf, err = dec.Decrypt(buf[:0], p)
			if err != nil {
				res.err = err
				out <- res
				return
			}
			res.got = append(res.got, buf...)
		}
	}
	early, late := make(chan result, 1), make(chan result, 1)
	go play(early)
	for i := 0; i < 100; i++ {
		if st, _ := hub.Status("live", "x"); st.ReadersByProtocol[ProtoFLV] == 1 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st, _ := hub.Status("live", "x"); st.Readers != 1 || st.ReadersByProtocol[ProtoFLV] != 1 || st.InternalReaders != 2 {
		t.Errorf("status with one player: %d readers %v, %d internal; want 1 flv, 2 internal", st.Readers, st.ReadersByProtocol, st.InternalReaders)
	}
	var states []bool
	for _, p := range ps {
		// Changes asked for just after a keyframe apply at the next one.
		if p.Kind == av.KindVideo && !p.Header {
			switch p.DTS {
			case 3040 * time.Millisecond:
				setEnc(false)
			case 5040 * time.Millisecond:
				go play(late)
			case 6040 * time.Millisecond:
				setEnc(true)
			case 9040 * time.Millisecond:
				setEnc(false)
			}
		}
		feed.WritePacket(p)
		if p.Key && !p.Header {
			time.Sleep(20 * time.Millisecond) // let the encryptor reach the keyframe
			states = append(states, e.enc.Enabled())
		} else {
			time.Sleep(200 * time.Microsecond)
		}
	}
	time.Sleep(200 * time.Millisecond)
	pl := string(hub.tsOut("live", "x").pk.playlist(""))
	_ = hub.Kick("live", "x") // ends the stream; a closed feed may leave a slate playing
	<-e.done
	want := func(from int) []*av.Packet {
		var out []*av.Packet
		for _, p := range ps[from:] {
			if !p.Header {
				out = append(out, p)
			}
		}
		return out
	}
	for name, ch := range map[string]chan result{"early": early, "late": late} {
		var res result
		select {
		case res = <-ch:
		case <-ctx.Done():
			t.Fatalf("%s player did not end", name)
		}
		if res.err != nil {
			t.Errorf("%s player: %v", name, res.err)
		}
		var media []*av.Packet
		for _, p := range res.got {
			if p.Kind != av.KindData && !p.Header {
				media = append(media, p)
			}
		}
		if len(media) == 0 {
			t.Fatalf("%s player got no media", name)
		}
		// The player's media is the clear stream from its first packet on.
		first := -1
		for i, p := range ps {
			if !p.Header && p.Kind == media[0].Kind && p.DTS == media[0].DTS {
				first = i
				break
			}
		}
		w := want(max(first, 0))
		if len(media) != len(w) {
			t.Fatalf("%s player: %d media packets, want %d", name, len(media), len(w))
		}
		for i := range w {
			if !bytes.Equal(media[i].Data, w[i].Data) || media[i].DTS != w[i].DTS {
				t.Fatalf("%s player: packet %d (%s at %v) does not decrypt to the clear one", name, i, w[i].Kind, w[i].DTS)
			}
		}
		if res.sigs < 5 {
			t.Errorf("%s player saw %d onEncryption tags", name, res.sigs)
		}
	}
	// Keyframes at 0..11 s: on until 3, off at 4..6, on at 7..9, off at 10, 11.
	wantStates := []bool{true, true, true, true, false, false, false, true, true, true, false, false}
	if len(states) != len(wantStates) {
		t.Fatalf("%d keyframes, want %d", len(states), len(wantStates))
	}
	for i := range states {
		if states[i] != wantStates[i] {
			t.Errorf("keyframe at %d s: encrypted %v, want %v (all %v)", i, states[i], wantStates[i], states)
		}
	}
	if strings.Count(pl, "#EXT-X-KEY:METHOD=NONE") != 2 || strings.Count(pl, "METHOD=SAMPLE-AES") != 2 {
		t.Errorf("playlist:\n%s", pl)
	}
}
