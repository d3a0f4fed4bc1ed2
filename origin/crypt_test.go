package origin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
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

// cryptRig drives the encrypting reader of one stream deterministically:
// the test goroutine writes the clear stream, runs the reader's loop one
// batch at a time (apply, then every queued packet, as run does), toggles
// encryption, rotates the key, and adds, drains and removes HTTP-FLV
// players (flv_coalesce audio holding, small queues that overflow into
// keyframe skips). Each player's tags go through encryption.DecryptFLV,
// the code of `livectl decrypt`, and must give back the clear tags
// exactly.
type cryptRig struct {
	t      testing.TB
	ks     *encryption.MemKeyStore
	keys   *sessionKeys
	src    *Stream
	c      *cryptFLV
	clear  []*av.Packet // the clear stream
	next   int          // clear packets written so far
	byID   map[rigID]*av.Packet
	want   bool
	pkts   []*av.Packet
	out    []*av.Packet
	plays  []*rigPlayer
	done   []*rigPlayer
	joined int
}

// rigID names a clear packet: media packets have distinct timestamps per
// kind; headers and script packets pass the encryptor unchanged.
type rigID struct {
	kind   av.Kind
	dts    time.Duration
	header bool
}

type rigPlayer struct {
	name string
	rd   *Reader
	got  []*av.Packet // what the player wrote, in order
}

// rigStream returns n GOPs of clear media: 10 video frames a GOP (an SEI
// and a slice of distinct random bytes, long enough for encrypted blocks),
// AAC frames between them, and the sequence headers first.
func rigStream(t testing.TB, n int, seed uint64) []*av.Packet {
	rnd := rand.New(rand.NewPCG(seed, 7))
	bytesN := func(l int) []byte {
		b := make([]byte, l)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		return b
	}
	ps := []*av.Packet{testAVC(t, 0), {Kind: av.KindAudio, Codec: av.CodecAAC, Header: true, Data: []byte{0x12, 0x10}}}
	for i := range n * 10 {
		key := i%10 == 0
		slice := bytesN(49 + rnd.IntN(600))
		slice[0] = 0x41
		if key {
			slice[0] = 0x65
		}
		sei := append([]byte{0x06}, bytesN(60)...)
		ps = append(ps, &av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, Key: key, DTS: ms(i * 40), Data: av.AppendAVCC(nil, [][]byte{sei, slice})})
		for j := range 1 + rnd.IntN(2) {
			ps = append(ps, &av.Packet{Kind: av.KindAudio, Codec: av.CodecAAC, DTS: ms(i*40 + 1 + j*20), Data: bytesN(32 + rnd.IntN(300))})
		}
	}
	return ps
}

func newCryptRig(t testing.TB, gops int, seed uint64, on bool, queue int) *cryptRig {
	cfg := DefaultConfig()
	cfg.ReaderQueue = queue
	cfg.MaxOverflows = 1 << 30 // players skip to keyframes, never dropped for it
	cfg.MaxLag = time.Hour
	ks := &encryption.MemKeyStore{}
	keys := &sessionKeys{stream: "live/x", newKey: hubKeys(ks)}
	log := slog.New(slog.DiscardHandler)
	enc, err := encryption.NewEncryptor(encryption.EncryptorConfig{Stream: keys.stream, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	src := NewStream(cfg, nil)
	out := NewStream(cfg, nil)
	out.signals = true
	c := &cryptFLV{log: log, keys: keys, enc: enc, out: out, done: make(chan struct{})}
	c.want.Store(on)
	c.src = src.subscribe(true, roleInternal)
	r := &cryptRig{t: t, ks: ks, keys: keys, src: src, c: c, clear: rigStream(t, gops, seed), byID: map[rigID]*av.Packet{}, want: on}
	for _, p := range r.clear {
		id := rigID{p.Kind, p.DTS, p.Header}
		if p.Header || p.Kind == av.KindData {
			continue
		}
		if r.byID[id] != nil {
			t.Fatalf("two clear packets %v", id)
		}
		r.byID[id] = p
	}
	return r
}

// write puts the next n clear packets into the stream.
func (r *cryptRig) write(n int) {
	for ; n > 0 && r.next < len(r.clear); n-- {
		r.src.Write(r.clear[r.next])
		r.next++
	}
}

// step is one turn of cryptFLV.run: apply the asked state, then encrypt
// every queued packet.
func (r *cryptRig) step() {
	r.c.apply()
	r.pkts = r.c.src.poll(r.pkts[:0])
	for _, p := range r.pkts {
		r.out = r.c.write(p, r.out[:0])
	}
	clear(r.pkts)
}

func (r *cryptRig) toggle() {
	r.want = !r.want
	r.c.setEncrypted(r.want)
}

// rotate gives the encryptor a new key from the next keyframe on.
func (r *cryptRig) rotate() {
	k, err := r.keys.newKey(context.Background(), r.keys.stream)
	if err != nil {
		r.t.Fatal(err)
	}
	r.c.enc.SetKey(k)
}

func (r *cryptRig) join() {
	if len(r.plays) >= 4 {
		return
	}
	r.joined++
	rd := r.c.subscribe(roleFLV)
	rd.holdAudio(time.Hour) // flv_coalesce: audio waits for the next video frame
	r.plays = append(r.plays, &rigPlayer{name: fmt.Sprintf("player %d", r.joined), rd: rd})
}

// poll lets player i write what is queued for it, as writeFLV does (without
// waiting: the player may have nothing queued).
func (r *cryptRig) poll(i int) {
	if len(r.plays) == 0 {
		return
	}
	p := r.plays[i%len(r.plays)]
	p.got = p.rd.poll(p.got)
}

func (r *cryptRig) leave(i int) {
	if len(r.plays) == 0 {
		return
	}
	i %= len(r.plays)
	p := r.plays[i]
	p.got = p.rd.poll(p.got)
	p.rd.Close()
	r.done = append(r.done, p)
	r.plays = append(r.plays[:i], r.plays[i+1:]...)
}

// finish writes the rest of the stream, ends it and checks every player.
func (r *cryptRig) finish() {
	r.write(len(r.clear))
	r.step()
	for i := range r.plays {
		r.poll(i)
	}
	for len(r.plays) > 0 {
		r.leave(0)
	}
	for _, p := range r.done {
		r.check(p)
	}
}

// check decrypts what p wrote with encryption.DecryptFLV and compares it
// with the FLV of the clear packets p was given, byte for byte.
func (r *cryptRig) check(p *rigPlayer) {
	r.t.Helper()
	enc := av.FLVHeader(true, true)
	want := av.FLVHeader(true, true)
	var last *encryption.Signal
	lastIdx := -1
	for i, q := range p.got {
		enc = av.AppendTag(enc, q)
		if q.Kind == av.KindData && encryption.IsSignal(q.Data) {
			s, err := encryption.ParseSignal(q.Data)
			if err != nil {
				r.t.Fatalf("%s: tag %d: %v", p.name, i, err)
			}
			last = s
			continue
		}
		if q.Header || q.Kind == av.KindData {
			want = av.AppendTag(want, q)
			continue
		}
		c := r.byID[rigID{q.Kind, q.DTS, false}]
		if c == nil {
			r.t.Fatalf("%s: tag %d: %s at %v is no packet of the clear stream", p.name, i, q.Kind, q.DTS)
		}
		idx := slices.Index(r.clear, c)
		if idx <= lastIdx {
			r.t.Fatalf("%s: tag %d: %s at %v out of order", p.name, i, q.Kind, q.DTS)
		}
		lastIdx = idx
		// What the signal in effect says must be true of the tag: the
		// synthetic media always has encrypted blocks.
		encrypted := !bytes.Equal(q.Data, c.Data)
		if stated := last != nil && last.Encrypted; stated != encrypted {
			r.t.Fatalf("%s: tag %d: %s at %v (key %v) is encrypted=%v after a signal saying %v", p.name, i, q.Kind, q.DTS, q.Key, encrypted, stated)
		}
		want = av.AppendTag(want, c)
	}
	var got bytes.Buffer
	err := encryption.DecryptFLV(&got, bytes.NewReader(enc), func(s *encryption.Signal) (*encryption.Key, error) {
		return r.ks.Get(context.Background(), r.keys.stream, s.KeyID)
	})
	if err != nil {
		r.t.Fatalf("%s: livectl's decryption: %v", p.name, err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		r.t.Fatalf("%s: the decrypted FLV (%d bytes) is not the clear one (%d bytes)", p.name, got.Len(), len(want))
	}
}

// Rig operations, chosen by the table's scripts and by the fuzz input.
const (
	opWrite1 = iota // write one clear packet
	opWrite5        // write five
	opStep          // the encrypting reader takes a batch
	opToggle        // encryption on/off (at the next keyframe)
	opRotate        // a new key (at the next keyframe)
	opJoin          // a player joins
	opDrain         // player 0 writes what it has
	opDrain1        // player 1 ...
	opLeave         // player 0 leaves
	nOps
)

func (r *cryptRig) do(op byte) {
	switch op % nOps {
	case opWrite1:
		r.write(1)
	case opWrite5:
		r.write(5)
	case opStep:
		r.step()
	case opToggle:
		r.toggle()
	case opRotate:
		r.rotate()
	case opJoin:
		r.join()
	case opDrain:
		r.poll(0)
	case opDrain1:
		r.poll(1)
	case opLeave:
		r.leave(0)
	}
}

// TestCryptSwitchPoints puts toggles, key rotations, audio held by
// flv_coalesce, batches of the encrypting reader and keyframe skips of
// slow players at adversarial points: every player's FLV, decrypted by
// livectl's code, is the clear FLV byte for byte, and every media tag is
// in the state the last onEncryption tag announced.
func TestCryptSwitchPoints(t *testing.T) {
	// Script shorthand: w write 1, W write 5, s step, T toggle, R rotate,
	// j join, d/e drain player 0/1, l player 0 leaves.
	ops := map[rune]byte{'w': opWrite1, 'W': opWrite5, 's': opStep, 'T': opToggle, 'R': opRotate, 'j': opJoin, 'd': opDrain, 'e': opDrain1, 'l': opLeave}
	cases := []struct {
		name   string
		on     bool
		queue  int
		script string
	}{
		{"toggle every batch", true, 64, "jWsdTWsdTWsdTWWsdTWWWsdTWWWWsdjTWWWWsdeTWWWWWWWWWWsde"},
		{"toggle just before a keyframe", true, 64, "jWWsdWwwwwTsdwsdWWWWWwwwTsdwwwwsd"},
		{"toggle with the keyframe in the batch", false, 64, "jWWsdWWWwwwwwTWWWWwwsdTWWWWWWWWWWsd"},
		{"off then on before a keyframe", true, 64, "jWWsdTWsTWsdWWWWWWsdWWWWW"},
		{"rotation and toggle together", true, 64, "jWWsdRTWWWWWsdRTWWWWWWsdRWWWWWWsd"},
		{"rotation alone", true, 64, "jWWWWWWRsdWWWWWWRsdWWWWWWRsd"},
		{"audio held across a switch", true, 64, "jWWsdwswswswsTwswsWWWWswswsd"},
		{"player joins at the switch", true, 64, "WWsTWWWWWWWjsdWWWWsdTWWWWWWsjdWWWWWWsd"},
		{"slow player skips across toggles", true, 6, "jWWsdWWWWsTWWWWsWWWWsdWWWWWWsdTWWWWWWWWsdWWsd"},
		{"slow player skips across a rotation", true, 6, "jWWsdWWWWsRWWWWsWWWWsdWWWWWsTWWWsWWWWWsd"},
		{"encrypting reader skips", false, 6, "jWsdWWWWWWWWTWWWWWWWWsdWWWWWWsdTWWWWWWWWWWWsd"},
		{"starts clear, first on", false, 64, "jWWWsdTWWWWWWWWsdjWWWWWWWsdesd"},
		{"players leave and join", true, 16, "jWsdjWsdeTlWWWWWsdjWWWsdTWWWWWWsdelWWWWWWsd"},
		// Issue 16's artefact TestEncryptionOnOff-153714: a stream
		// encrypted from its start, two players joining in its first GOP,
		// one before an audio frame and one after it. Each must get the
		// signal before the cached GOP (a binary built without the
		// subscribe-time signal gave them the GOP unannounced, and the
		// signal only before their first live packet).
		{"players join in the first GOP of a stream encrypted from its start", true, 64, "WWwsjwsjwsdeWWsdeWWWWWWWWsde"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newCryptRig(t, 12, 1, tc.on, tc.queue)
			for _, ch := range tc.script {
				op, ok := ops[ch]
				if !ok {
					t.Fatalf("script op %q", ch)
				}
				r.do(op)
			}
			r.finish()
			if r.joined == 0 {
				t.Fatal("no player")
			}
		})
	}
}

// FuzzCryptSwitchPoints lets the input choose the interleaving of the
// stream, the encrypting reader's batches, toggles, rotations and the
// players' joins, reads and leaves (TestCryptSwitchPoints' checks).
func FuzzCryptSwitchPoints(f *testing.F) {
	f.Add([]byte{opJoin, opWrite5, opStep, opDrain, opToggle, opWrite5, opWrite5, opStep, opDrain}, uint8(64), true)
	f.Add([]byte{opJoin, opWrite5, opWrite5, opToggle, opRotate, opWrite1, opStep, opJoin, opWrite5, opStep, opDrain1, opLeave}, uint8(6), false)
	f.Fuzz(func(t *testing.T, script []byte, queue uint8, on bool) {
		if len(script) > 4096 {
			return
		}
		r := newCryptRig(t, 8, uint64(len(script)), on, 4+int(queue%64))
		for _, op := range script {
			r.do(op)
		}
		r.finish()
	})
}

// TestEncryptedStartJoin: HTTP-FLV players that join an encrypted stream
// at its very start, before the content key is made, during the first GOP
// and after it, each get an onEncryption tag before their first media tag
// and before every keyframe, and every media tag is in the state the last
// tag announced (through the hub's handler, switcher and encrypting
// reader, with audio held by flv_coalesce).
func TestEncryptedStartJoin(t *testing.T) {
	for _, keyWait := range []time.Duration{0, 30 * time.Millisecond} {
		t.Run(fmt.Sprintf("key after %v", keyWait), func(t *testing.T) { testEncryptedStartJoin(t, keyWait) })
	}
}

func testEncryptedStartJoin(t *testing.T, keyWait time.Duration) {
	cfg := DefaultConfig()
	ks := &encryption.MemKeyStore{}
	cfg.Encryption = EncryptionConfig{NewKey: func(ctx context.Context, stream string) (*encryption.Key, error) {
		time.Sleep(keyWait) // the key store's write
		return hubKeys(ks)(ctx, stream)
	}, AllStreams: true}
	cfg.FLVCoalesce = 40 * time.Millisecond
	hub, err := NewHub(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	if err := hub.SetStreamPolicy("live", "x", StreamPolicy{Encrypted: true}); err != nil {
		t.Fatal(err)
	}
	feed, err := hub.Publish("live", "x", FeedMain, av.Source{Protocol: "test"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(hub.Handler())
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	meta := &av.Packet{Kind: av.KindData, Data: av.EncodeScript("onMetaData", map[string]any{"width": 320})}
	ps := append([]*av.Packet{meta}, rigStream(t, 3, 5)...)
	clearOf := map[rigID][]byte{}
	for _, p := range ps {
		if !p.Header && p.Kind != av.KindData {
			clearOf[rigID{p.Kind, p.DTS, false}] = p.Data
		}
	}
	type result struct {
		got []*av.Packet
		err error
	}
	results := make(chan result, 16)
	players := 0
	play := func() {
		players++
		go func() {
			var res result
			defer func() { results <- res }()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/live/x.flv", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				res.err = err
				return
			}
			defer resp.Body.Close()
			r, err := av.NewFLVReader(resp.Body)
			if err != nil {
				res.err = err
				return
			}
			for {
				p, err := r.ReadPacket()
				if err != nil {
					return
				}
				res.got = append(res.got, p)
			}
		}()
	}
	for i, p := range ps {
		if i%6 == 0 && i <= 40 || i == 70 {
			play() // before the first packet, through the first GOP, in the second
		}
		feed.WritePacket(p)
		time.Sleep(time.Millisecond) // let the players and the encrypting reader interleave
	}
	time.Sleep(100 * time.Millisecond)
	_ = hub.Kick("live", "x")
	for range players {
		var res result
		select {
		case res = <-results:
		case <-ctx.Done():
			t.Fatal("a player did not end")
		}
		if res.err != nil {
			t.Fatal(res.err)
		}
		var last *encryption.Signal
		sigBefore, media := false, 0
		for i, p := range res.got {
			if p.Kind == av.KindData && encryption.IsSignal(p.Data) {
				s, err := encryption.ParseSignal(p.Data)
				if err != nil {
					t.Fatal(err)
				}
				last, sigBefore = s, true
				continue
			}
			if p.Header || p.Kind == av.KindData {
				continue
			}
			c, ok := clearOf[rigID{p.Kind, p.DTS, false}]
			if !ok {
				continue // the slate after the kick
			}
			media++
			if p.Kind == av.KindVideo && p.Key && !sigBefore {
				t.Fatalf("tag %d: keyframe at %v without an onEncryption tag before it", i, p.DTS)
			}
			if last == nil {
				t.Fatalf("tag %d: %s at %v before any onEncryption tag", i, p.Kind, p.DTS)
			}
			if enc := !bytes.Equal(c, p.Data); enc != last.Encrypted {
				t.Fatalf("tag %d: %s at %v encrypted=%v after a tag saying %v", i, p.Kind, p.DTS, enc, last.Encrypted)
			}
			sigBefore = false
		}
		if media == 0 {
			t.Error("a player got no media")
		}
	}
}
