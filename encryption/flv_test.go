package encryption

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestSignalRoundTrip(t *testing.T) {
	k := testKey(t)
	for _, s := range []Signal{
		{Encrypted: false},
		{Encrypted: true, KeyID: k.ID, KeyURI: "/keys/live/a/test", IV: k.IV},
		{Encrypted: true, KeyID: "a.b-c_D9", KeyURI: "", IV: [16]byte{0xff}},
	} {
		body := s.Marshal()
		if !IsSignal(body) {
			t.Fatalf("IsSignal false for %+v", s)
		}
		got, err := ParseSignal(body)
		if err != nil {
			t.Fatalf("%+v: %v", s, err)
		}
		if *got != s {
			t.Fatalf("round trip %+v -> %+v", s, *got)
		}
	}
	if IsSignal(av.EncodeScript("onMetaData", map[string]any{"width": 1})) {
		t.Fatal("onMetaData taken for a signal")
	}
}

func TestParseSignalErrors(t *testing.T) {
	good := map[string]any{
		"version": 1, "scheme": Scheme, "encrypted": true, "method": "SAMPLE-AES",
		"keyId": "k1", "keyUri": "/keys/live/a/k1", "iv": "0x000102030405060708090a0b0c0d0e0f",
	}
	with := func(k string, v any) map[string]any {
		m := map[string]any{}
		for a, b := range good {
			m[a] = b
		}
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	if _, err := ParseSignal(av.EncodeScript(ScriptName, good)); err != nil {
		t.Fatalf("good signal refused: %v", err)
	}
	for name, body := range map[string][]byte{
		"other name":   av.EncodeScript("onMetaData", good),
		"scheme":       av.EncodeScript(ScriptName, with("scheme", "cenc")),
		"no scheme":    av.EncodeScript(ScriptName, with("scheme", nil)),
		"version":      av.EncodeScript(ScriptName, with("version", 2)),
		"encrypted":    av.EncodeScript(ScriptName, with("encrypted", "yes")),
		"method":       av.EncodeScript(ScriptName, with("method", "AES-128")),
		"no key id":    av.EncodeScript(ScriptName, with("keyId", nil)),
		"key id chars": av.EncodeScript(ScriptName, with("keyId", "../x")),
		"iv short":     av.EncodeScript(ScriptName, with("iv", "0x0001")),
		"iv no 0x":     av.EncodeScript(ScriptName, with("iv", "000102030405060708090a0b0c0d0e0f")),
		"iv hex":       av.EncodeScript(ScriptName, with("iv", "0x000102030405060708090a0b0c0d0ezz")),
		"uri long":     av.EncodeScript(ScriptName, with("keyUri", strings.Repeat("a", 3000))),
		"truncated":    av.EncodeScript(ScriptName, good)[:30],
		"empty":        nil,
	} {
		if _, err := ParseSignal(body); !errors.Is(err, ErrBadSignal) {
			t.Errorf("%s: err %v, want ErrBadSignal", name, err)
		}
	}
}

// synth builds a clear H.264+AAC stream: metadata and sequence headers,
// then gops GOPs of n video frames (40 ms apart) with an audio frame after
// each video frame.
func synth(gops, n int) []*av.Packet {
	ps := []*av.Packet{
		{Kind: av.KindData, Data: av.EncodeScript("onMetaData", map[string]any{"width": 320})},
		{Kind: av.KindVideo, Codec: av.CodecH264, Header: true, Key: true, Data: []byte{1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 0x64, 0, 0x1f, 1, 0, 2, 0x68, 0xee}},
		{Kind: av.KindAudio, Codec: av.CodecAAC, Header: true, Data: []byte{0x12, 0x10}},
	}
	i := 0
	for g := range gops {
		for f := range n {
			dts := time.Duration(i) * 40 * time.Millisecond
			nal := countingNALU(300 + 37*f + g)
			if f > 0 {
				nal[0] = 0x41
			}
			sei := []byte{0x06, 5, 1, 2, 3, 4, 0x80}
			ps = append(ps, &av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, Key: f == 0, DTS: dts, CTS: 40 * time.Millisecond, Data: avcc(sei, nal)})
			frame := bytes.Repeat([]byte{byte(i), 0x21}, 100+i%7)
			ps = append(ps, &av.Packet{Kind: av.KindAudio, Codec: av.CodecAAC, DTS: dts + 10*time.Millisecond, Data: frame})
			i++
		}
	}
	return ps
}

func samePacket(a, b *av.Packet) bool {
	return a.Kind == b.Kind && a.Codec == b.Codec && a.Header == b.Header && a.Key == b.Key &&
		a.DTS == b.DTS && a.CTS == b.CTS && bytes.Equal(a.Data, b.Data)
}

// lookupFor returns a key lookup over keys.
func lookupFor(keys ...*Key) func(string) (*Key, error) {
	return func(id string) (*Key, error) {
		for _, k := range keys {
			if k.ID == id {
				return k, nil
			}
		}
		return nil, fmt.Errorf("key %s: %w", id, ErrKeyNotFound)
	}
}

func TestEncryptorDecryptor(t *testing.T) {
	k1, _ := NewKey()
	k2, _ := NewKey()
	clear := synth(6, 5) // 3 header packets, then GOPs of 10 packets
	gopStart := func(g int) int { return 3 + g*10 }

	type step struct {
		at     int // packet index at which the call is made
		action func(e *Encryptor)
	}
	for _, tc := range []struct {
		name    string
		enabled bool
		steps   []step
		// want[g] is the state of GOP g in the output: "" clear, else key ID.
		want []string
	}{
		{"on from start", true, nil, []string{k1.ID, k1.ID, k1.ID, k1.ID, k1.ID, k1.ID}},
		{"off from start", false, nil, []string{"", "", "", "", "", ""}},
		{
			"toggle mid-GOP takes effect at next keyframe", true,
			[]step{
				{gopStart(1) + 3, func(e *Encryptor) { e.SetEnabled(false) }},
				{gopStart(3) + 1, func(e *Encryptor) { e.SetEnabled(true) }},
				{gopStart(4) + 5, func(e *Encryptor) { e.SetEnabled(false) }},
				{gopStart(5), func(e *Encryptor) { e.SetEnabled(true) }}, // before the keyframe: this GOP
			},
			[]string{k1.ID, k1.ID, "", "", k1.ID, k1.ID},
		},
		{
			"rotation", true,
			[]step{{gopStart(2) + 4, func(e *Encryptor) { e.SetKey(k2) }}},
			[]string{k1.ID, k1.ID, k1.ID, k2.ID, k2.ID, k2.ID},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := NewEncryptor(EncryptorConfig{Stream: "live/a", Key: k1, Enabled: tc.enabled, Logger: quietLog()})
			if err != nil {
				t.Fatal(err)
			}
			var out []*av.Packet
			for i, p := range clear {
				for _, s := range tc.steps {
					if s.at == i {
						s.action(e)
					}
				}
				if out, err = e.Encrypt(out, p); err != nil {
					t.Fatal(err)
				}
			}
			// Walk the output: a signal before every keyframe, media
			// packets equal in size, encrypted as the GOP's state says.
			g, state, media := -1, "", 0
			for i, p := range out {
				if p.Kind == av.KindData && IsSignal(p.Data) {
					s, err := ParseSignal(p.Data)
					if err != nil {
						t.Fatal(err)
					}
					if next := out[i+1]; !next.Key || next.Header || next.DTS != p.DTS {
						t.Fatalf("signal at %d not right before a keyframe", i)
					}
					g++
					state = ""
					if s.Encrypted {
						state = s.KeyID
						if s.KeyURI != "/keys/live/a/"+s.KeyID {
							t.Errorf("key uri %q", s.KeyURI)
						}
					}
					if state != tc.want[g] {
						t.Errorf("GOP %d state %q, want %q", g, state, tc.want[g])
					}
					continue
				}
				c := clear[media]
				media++
				if len(p.Data) != len(c.Data) || p.DTS != c.DTS || p.Kind != c.Kind || p.Key != c.Key {
					t.Fatalf("packet %d: %s %d bytes at %v, clear %s %d bytes at %v", i, p.Kind, len(p.Data), p.DTS, c.Kind, len(c.Data), c.DTS)
				}
				if encrypted := !bytes.Equal(p.Data, c.Data); encrypted != (state != "" && !c.Header && c.Kind != av.KindData) {
					t.Fatalf("packet %d (GOP %d, state %q): encrypted=%v", i, g, state, encrypted)
				}
			}
			if media != len(clear) || g != 5 {
				t.Fatalf("%d media packets and %d GOPs out", media, g+1)
			}

			d, _ := NewDecryptor(DecryptorConfig{Lookup: lookupFor(k1, k2)})
			var back []*av.Packet
			for _, p := range out {
				if back, err = d.Decrypt(back, p); err != nil {
					t.Fatal(err)
				}
			}
			if len(back) != len(clear) {
				t.Fatalf("decrypted %d packets, want %d", len(back), len(clear))
			}
			for i := range back {
				if !samePacket(back[i], clear[i]) {
					t.Fatalf("packet %d differs after decryption", i)
				}
			}
			// The input packets are shared and must be untouched.
			if again := synth(6, 5); !samePacket(again[20], clear[20]) {
				t.Fatal("Encrypt modified its input")
			}
		})
	}
}

func TestEncryptorDropsBeforeFirstKeyframe(t *testing.T) {
	k := testKey(t)
	e, _ := NewEncryptor(EncryptorConfig{Stream: "live/a", Key: k, Enabled: true, Logger: quietLog()})
	ps := synth(2, 3)
	// Start mid-GOP: headers, then a P-frame and an audio frame.
	in := append(append([]*av.Packet{}, ps[:3]...), ps[5:]...)
	var out []*av.Packet
	for _, p := range in {
		out, _ = e.Encrypt(out, p)
	}
	// The P-frame and audio before the second GOP's keyframe are dropped.
	if len(out) != 3+1+6 {
		t.Fatalf("%d packets out, want 10", len(out))
	}
	if !IsSignal(out[3].Data) || !out[4].Key {
		t.Fatal("output does not go on with signal + keyframe")
	}
	// Upstream signals are not passed on.
	sig := (&Signal{}).Packet(0)
	if out, _ = e.Encrypt(out[:0], sig); len(out) != 0 {
		t.Fatal("upstream onEncryption passed through")
	}
}

func TestEncryptorAudioOnly(t *testing.T) {
	k := testKey(t)
	e, _ := NewEncryptor(EncryptorConfig{Stream: "live/radio", Key: k, Enabled: true, Logger: quietLog()})
	d, _ := NewDecryptor(DecryptorConfig{Lookup: lookupFor(k)})
	var out, back []*av.Packet
	signals := 0
	var clear []*av.Packet
	for i := range 200 { // 200 frames of 23.2 ms: 4.6 s
		p := &av.Packet{Kind: av.KindAudio, Codec: av.CodecAAC, DTS: time.Duration(i) * 23220 * time.Microsecond, Data: bytes.Repeat([]byte{byte(i)}, 80)}
		clear = append(clear, p)
		if i == 100 {
			e.SetEnabled(false)
		}
		var err error
		out, err = e.Encrypt(out[:0], p)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range out {
			if q.Kind == av.KindData {
				signals++
			}
			if back, err = d.Decrypt(back, q); err != nil {
				t.Fatal(err)
			}
		}
		if wantOn := i < 100; e.Enabled() != wantOn {
			t.Fatalf("frame %d: Enabled()=%v", i, e.Enabled())
		}
	}
	// First frame, 2 s later, the change at frame 100, 2 s later again.
	if signals != 4 {
		t.Errorf("%d signals, want 4", signals)
	}
	for i := range clear {
		if !samePacket(back[i], clear[i]) {
			t.Fatalf("frame %d differs after decryption", i)
		}
	}
}

func TestEncryptorNoKey(t *testing.T) {
	if _, err := NewEncryptor(EncryptorConfig{Enabled: true}); err == nil {
		t.Fatal("enabled without key accepted")
	}
	e, _ := NewEncryptor(EncryptorConfig{Stream: "live/a", Logger: quietLog()})
	e.SetEnabled(true) // no key yet: stays off
	ps := synth(2, 2)
	var out []*av.Packet
	for _, p := range ps[:5] {
		out, _ = e.Encrypt(out, p)
	}
	if e.Enabled() {
		t.Fatal("on without a key")
	}
	e.SetKey(testKey(t))
	for _, p := range ps[5:] {
		out, _ = e.Encrypt(out, p)
	}
	if !e.Enabled() {
		t.Fatal("not on after SetKey")
	}
}

func TestEncryptorMalformedPacket(t *testing.T) {
	k := testKey(t)
	e, _ := NewEncryptor(EncryptorConfig{Stream: "live/a", Key: k, Enabled: true, Logger: quietLog()})
	ps := synth(1, 3)
	var out []*av.Packet
	for _, p := range ps[:4] {
		out, _ = e.Encrypt(out, p)
	}
	n := len(out)
	bad := &av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, DTS: time.Second, Data: []byte{0, 0, 1, 0, 0x41}}
	out, err := e.Encrypt(out, bad)
	if !errors.Is(err, ErrMalformed) || len(out) != n {
		t.Fatalf("malformed packet: err %v, %d packets out (had %d)", err, len(out), n)
	}
	// The stream goes on.
	if out, err = e.Encrypt(out, ps[4]); err != nil || len(out) != n+1 {
		t.Fatalf("next packet: %v", err)
	}
}

func TestDecryptorErrors(t *testing.T) {
	k := testKey(t)
	if _, err := NewDecryptor(DecryptorConfig{}); err == nil {
		t.Fatal("decryptor without lookup accepted")
	}
	d, _ := NewDecryptor(DecryptorConfig{Lookup: lookupFor()})
	sig := (&Signal{Encrypted: true, KeyID: k.ID, IV: k.IV}).Packet(0)
	if _, err := d.Decrypt(nil, sig); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("unknown key: %v", err)
	}
	bad := &av.Packet{Kind: av.KindData, Data: append([]byte(nil), sig.Data[:20]...)}
	if _, err := d.Decrypt(nil, bad); !errors.Is(err, ErrBadSignal) {
		t.Fatalf("truncated signal: %v", err)
	}
	d, _ = NewDecryptor(DecryptorConfig{Lookup: lookupFor(k)})
	if _, err := d.Decrypt(nil, sig); err != nil || !d.Encrypted() {
		t.Fatal(err)
	}
	if _, err := d.Decrypt(nil, &av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, Data: []byte{0, 0, 0, 9, 1}}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("malformed AVCC: %v", err)
	}
}

// TestEncryptorConcurrentControl runs SetEnabled and SetKey from other
// goroutines while packets flow (meaningful under -race).
func TestEncryptorConcurrentControl(t *testing.T) {
	k1, _ := NewKey()
	k2, _ := NewKey()
	e, _ := NewEncryptor(EncryptorConfig{Stream: "live/a", Key: k1, Enabled: true, Logger: quietLog()})
	ps := synth(40, 3)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 2 {
		wg.Go(func() {
			for i := 0; i < 1000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if g == 0 {
					e.SetEnabled(i%2 == 0)
				} else if i%2 == 0 {
					e.SetKey(k2)
				} else {
					e.SetKey(k1)
				}
				_ = e.Enabled()
			}
		})
	}
	d, _ := NewDecryptor(DecryptorConfig{Lookup: lookupFor(k1, k2)})
	var out, back []*av.Packet
	var err error
	for _, p := range ps {
		if out, err = e.Encrypt(out[:0], p); err != nil {
			t.Fatal(err)
		}
		for _, q := range out {
			if back, err = d.Decrypt(back, q); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	wg.Wait()
	for i := range ps {
		if !samePacket(back[i], ps[i]) {
			t.Fatalf("packet %d differs", i)
		}
	}
}

func FuzzOnEncryptionScript(f *testing.F) {
	k := testKey(f)
	f.Add((&Signal{Encrypted: true, KeyID: k.ID, KeyURI: "/keys/live/a/test", IV: k.IV}).Marshal())
	f.Add((&Signal{}).Marshal())
	f.Add(av.EncodeScript(ScriptName, map[string]any{"version": 1, "scheme": Scheme, "encrypted": true}))
	f.Add([]byte{2, 0, 12, 'o', 'n', 'E', 'n', 'c', 'r', 'y', 'p', 't', 'i', 'o', 'n', 8, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, body []byte) {
		s, err := ParseSignal(body)
		if err != nil {
			return
		}
		again, err := ParseSignal(s.Marshal())
		if err != nil || *again != *s {
			t.Fatalf("re-encoded signal differs: %+v vs %+v (%v)", s, again, err)
		}
		// A Decryptor fed the signal never panics, whatever follows.
		d, _ := NewDecryptor(DecryptorConfig{Lookup: lookupFor(&Key{ID: s.KeyID})})
		_, _ = d.Decrypt(nil, &av.Packet{Kind: av.KindData, Data: body})
		_, _ = d.Decrypt(nil, &av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, Data: body})
		_, _ = d.Decrypt(nil, &av.Packet{Kind: av.KindAudio, Codec: av.CodecAAC, Data: body})
	})
}
