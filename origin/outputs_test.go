package origin

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
	"github.com/livefuse/livefuse/encryption"
)

// sigPkt is an onEncryption packet announcing on.
func sigPkt(dts int, on bool) *av.Packet {
	s := encryption.Signal{Encrypted: on}
	if on {
		s.KeyID, s.KeyURI = "k1", "/keys/live/x/k1"
	}
	return s.Packet(ms(dts))
}

// encMark marks a media packet as "encrypted" for the switch-point test:
// its payload's last byte is 0xee.
func encMark(p *av.Packet) *av.Packet {
	q := *p
	q.Data = append(bytes.Clone(p.Data), 0xee)
	return &q
}

func isEncMarked(p *av.Packet) bool { return len(p.Data) > 0 && p.Data[len(p.Data)-1] == 0xee }

// TestSignalSwitchPoints writes an encrypted output (signals, as
// cryptFLV writes them) to a stream and reads it with readers that hold
// audio (flv_coalesce), joined at every point (before, between a signal
// and its keyframe, after), one of them skipping after an overflow: each
// reader's media is in the state of the last signal before it, whatever
// it held or skipped (media before any signal is clear, as the
// encrypted output of a clear stream is until encryption is first on).
func TestSignalSwitchPoints(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ReaderQueue = 64
	cfg.MaxOverflows = 1000 // the slow reader skips, and stays
	cfg.MaxLag = time.Hour
	s := NewStream(cfg, nil)
	s.signals = true
	type rd struct {
		name string
		r    *Reader
		got  []*av.Packet
	}
	var readers []*rd
	join := func(name string, hold bool) {
		r := s.subscribe(false, roleFLV)
		if hold {
			r.holdAudio(time.Hour) // audio waits for the next video frame
		}
		readers = append(readers, &rd{name: name, r: r})
	}
	drain := func() {
		for _, x := range readers {
			x.got = x.r.poll(x.got)
		}
	}
	s.Write(avcHdr(1))
	s.Write(aacHdr())
	join("before", true)
	join("slow", true) // never drained until the end: overflows and skips
	on := false
	dts := 0
	gop := func(switchTo bool, joinBetween string) {
		// Audio before the keyframe, held by the readers.
		s.Write(mark(aud(dts), on))
		s.Write(mark(aud(dts+10), on))
		if switchTo != on || dts == 0 {
			s.Write(sigPkt(dts+20, switchTo))
			on = switchTo
		} else {
			s.Write(sigPkt(dts+20, on)) // repeated before every keyframe
		}
		if joinBetween != "" {
			join(joinBetween, true)
		}
		s.Write(mark(vid(dts+20, true), on))
		for i := 1; i < 10; i++ {
			s.Write(mark(aud(dts+20+i*40-5), on))
			s.Write(mark(vid(dts+20+i*40, false), on))
		}
		dts += 400
		for _, x := range readers {
			if x.name != "slow" {
				x.got = x.r.poll(x.got)
			}
		}
	}
	gop(false, "")
	gop(true, "between-on")
	join("during", false)
	gop(true, "")
	gop(false, "between-off")
	join("after-off", true)
	gop(false, "")
	gop(true, "")
	for range 8 {
		gop(!on, "") // overflow the slow reader a few times
	}
	drain()
	for _, x := range readers {
		state, seen, media := false, false, 0
		for i, p := range x.got {
			if p.Kind == av.KindData && encryption.IsSignal(p.Data) {
				sg, err := encryption.ParseSignal(p.Data)
				if err != nil {
					t.Fatal(err)
				}
				state, seen = sg.Encrypted, true
				continue
			}
			if p.Header || p.Kind == av.KindData {
				continue
			}
			media++
			if !seen && isEncMarked(p) {
				t.Fatalf("%s: encrypted packet %d (%s at %v) before any signal", x.name, i, p.Kind, p.DTS)
			}
			if isEncMarked(p) != state {
				t.Fatalf("%s: packet %d (%s at %v) encrypted=%v after a signal saying %v", x.name, i, p.Kind, p.DTS, isEncMarked(p), state)
			}
		}
		if media == 0 {
			t.Fatalf("%s got no media", x.name)
		}
	}
}

// mark returns p marked as encrypted when on.
func mark(p *av.Packet, on bool) *av.Packet {
	if on {
		return encMark(p)
	}
	return p
}

// TestStreamPolicy: a policy pushed before the stream goes live applies
// when it does (feed policy, encryption of the stream, of its play alias
// and of its renditions); a change applies to the live streams; deleting
// it makes the stream clear again; an invalid policy is refused.
func TestStreamPolicy(t *testing.T) {
	cfg := flvConfig()
	cfg.HLSVariant = HLSMPEGTS
	cfg.Encryption = EncryptionConfig{NewKey: hubKeys(&encryption.MemKeyStore{})}
	h, _, _ := newTestHub(t, cfg)
	pol := StreamPolicy{Feed: PolicyMain, Encrypted: true, PlayAlias: "cam_source",
		Variants: []Variant{{Name: "180p", Stream: "cam_180p"}}}
	if err := h.SetStreamPolicy("live", "cam", pol); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []StreamPolicy{{Feed: "sideways"}, {PlayAlias: "../x"}, {Variants: []Variant{{Name: "a b", Stream: "x"}}}} {
		if err := h.SetStreamPolicy("live", "bad", bad); err == nil {
			t.Errorf("policy %+v accepted", bad)
		}
	}
	for _, n := range []string{"cam", "cam_source", "cam_180p", "other"} {
		f, err := h.Publish("live", n, FeedMain, av.Source{Protocol: "test"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(f.Close)
	}
	st, _ := h.Status("live", "cam")
	if st.Switch.Policy != PolicyMain {
		t.Errorf("feed policy %q, want main", st.Switch.Policy)
	}
	for n, want := range map[string]bool{"cam": true, "cam_source": true, "cam_180p": true, "other": false} {
		if c := cryptOf(h, "live", n); (c != nil && c.want.Load()) != want {
			t.Errorf("%s: encrypted output %v, want %v", n, c != nil, want)
		}
		if got := h.encrypted("live", n); got != want {
			t.Errorf("%s: encrypted %v, want %v", n, got, want)
		}
	}
	if got := h.playName("live", "cam"); got != "cam_source" {
		t.Errorf("play name %q", got)
	}
	if vs := h.variants("live", "cam"); len(vs) != 1 || vs[0].Stream != "cam_180p" {
		t.Errorf("variants %v", vs)
	}
	// Encryption off for the stream: its alias and renditions follow.
	pol.Encrypted = false
	if err := h.SetStreamPolicy("live", "cam", pol); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"cam", "cam_source", "cam_180p"} {
		if c := cryptOf(h, "live", n); c == nil || c.want.Load() {
			t.Errorf("%s: still encrypted after the policy turned it off", n)
		}
	}
	h.DeleteStreamPolicy("live", "cam")
	if h.playName("live", "cam") != "cam" || h.variants("live", "cam") != nil || h.encrypted("live", "cam_source") {
		t.Errorf("policy still in effect after delete")
	}
	if st, _ := h.Status("live", "cam"); st.Switch.Policy != PolicyAuto {
		t.Errorf("feed policy %q after delete, want auto", st.Switch.Policy)
	}
}

// TestEncryptedRefusals: a stream to be encrypted is never played clear:
// its fMP4 HLS is refused with the reason (501), and without a key source
// its HTTP-FLV and RTMP play are refused.
func TestEncryptedRefusals(t *testing.T) {
	for _, tc := range []struct {
		variant     string
		keys        bool
		hls, flv    int
		rtmpRefused bool
	}{
		{HLSFMP4, true, http.StatusNotImplemented, http.StatusOK, false},
		{HLSLowLatency, true, http.StatusNotImplemented, http.StatusOK, false},
		{HLSMPEGTS, false, http.StatusNotImplemented, http.StatusNotImplemented, true},
	} {
		t.Run(fmt.Sprintf("%s/keys=%v", tc.variant, tc.keys), func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.HLSVariant = tc.variant
			if tc.keys {
				cfg.Encryption.NewKey = hubKeys(&encryption.MemKeyStore{})
			}
			h, srv, _ := newTestHub(t, cfg)
			if err := h.SetStreamPolicy("live", "x", StreamPolicy{Encrypted: true}); err != nil {
				t.Fatal(err)
			}
			f, err := h.Publish("live", "x", FeedMain, av.Source{Protocol: "test"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(f.Close)
			for _, p := range synthGOPs(t, 0, 2, 0) {
				f.WritePacket(p)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp := get(t, ctx, srv.URL+"/live/x/index.m3u8")
			var body bytes.Buffer
			body.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.hls || (tc.hls == http.StatusNotImplemented && !strings.Contains(body.String(), "encrypted")) {
				t.Errorf("HLS: %d %q, want %d", resp.StatusCode, body.String(), tc.hls)
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodHead, srv.URL+"/live/x.flv", nil)
			resp, err = http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.flv {
				t.Errorf("HTTP-FLV: %d, want %d", resp.StatusCode, tc.flv)
			}
			r, err := h.Play("live", "x")
			if (err != nil) != tc.rtmpRefused {
				t.Errorf("RTMP play: %v, refused want %v", err, tc.rtmpRefused)
			}
			if r != nil {
				r.Close()
			}
		})
	}
}

// TestReadersCounted: players of every protocol are counted, clear or
// encrypted, and internal readers apart; in Status and in the metrics.
func TestReadersCounted(t *testing.T) {
	for _, all := range []bool{false, true} {
		t.Run(fmt.Sprintf("all=%v", all), func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Encryption = EncryptionConfig{NewKey: hubKeys(&encryption.MemKeyStore{}), AllStreams: all}
			h, srv, reg := newTestHub(t, cfg)
			f, err := h.Publish("live", "x", FeedMain, av.Source{Protocol: "test"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(f.Close)
			for _, p := range synthGOPs(t, 0, 3, 0) {
				f.WritePacket(p)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for range 2 {
				resp := get(t, ctx, srv.URL+"/live/x.flv")
				t.Cleanup(func() { resp.Body.Close() })
			}
			r, err := h.Play("live", "x")
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			consumer, _ := h.Subscribe("live", "x") // a recorder, say
			defer consumer.Close()
			for _, ua := range []string{"a", "b", "b"} {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/live/x/index.m3u8", nil)
				req.Header.Set("User-Agent", ua)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
			}
			var st Status
			for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
				if st, _ = h.Status("live", "x"); st.ReadersByProtocol[ProtoFLV] == 2 {
					break
				}
			}
			internal := 2 // the HLS packager and the consumer
			if all {
				internal++ // the encrypting reader
			}
			want := map[string]int{ProtoFLV: 2, ProtoRTMP: 1, ProtoHLS: 2}
			if st.Readers != 5 || fmt.Sprint(st.ReadersByProtocol) != fmt.Sprint(want) || st.InternalReaders != internal {
				t.Fatalf("status: %d readers %v, %d internal; want 5 %v, %d", st.Readers, st.ReadersByProtocol, st.InternalReaders, want, internal)
			}
			if got := metricValue(t, reg, "livefuse_origin_readers"); got != 5 {
				t.Errorf("livefuse_origin_readers: %v, want 5", got)
			}
			if got := metricValue(t, reg, "livefuse_origin_internal_readers"); got != float64(internal) {
				t.Errorf("livefuse_origin_internal_readers: %v, want %d", got, internal)
			}
		})
	}
}

// TestHLSViewers: a client counts within the window after its last
// request and not after; the table is bounded.
func TestHLSViewers(t *testing.T) {
	v := newHLSViewers(DefaultConfig())
	now := time.Unix(1000, 0)
	req := func(addr, ua string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/live/x/index.m3u8", nil)
		r.RemoteAddr, r.Header["User-Agent"] = addr, []string{ua}
		return r
	}
	v.saw(req("10.0.0.1:1000", "a"), now)
	v.saw(req("10.0.0.1:2000", "a"), now) // same client, another connection
	v.saw(req("10.0.0.1:1000", "b"), now)
	v.saw(req("10.0.0.2:1000", "a"), now.Add(4*time.Second))
	if n := v.count(now.Add(5 * time.Second)); n != 3 {
		t.Fatalf("%d viewers, want 3", n)
	}
	if n := v.count(now.Add(v.window + 2*time.Second)); n != 1 {
		t.Fatalf("%d viewers after the window, want 1", n)
	}
	for i := range maxHLSViewers + 100 {
		v.saw(req(fmt.Sprintf("10.1.%d.%d:1", i>>8&255, i&255), fmt.Sprint(i)), now.Add(20*time.Second))
	}
	if n := len(v.seen); n > maxHLSViewers {
		t.Fatalf("table of %d clients, cap %d", n, maxHLSViewers)
	}
}

// TestEncryptedBadMedia feeds malformed video to an encrypted stream
// whose HLS packager and encrypting reader both log errors: run with
// -race, each error limiter has one owner.
func TestEncryptedBadMedia(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Encryption = EncryptionConfig{NewKey: hubKeys(&encryption.MemKeyStore{}), AllStreams: true}
	h, srv, _ := newTestHub(t, cfg)
	if err := h.SetStreamPolicy("live", "x", StreamPolicy{Encrypted: true}); err != nil {
		t.Fatal(err)
	}
	f, err := h.Publish("live", "x", FeedMain, av.Source{Protocol: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	ps := synthGOPs(t, 0, 3, 0)
	for i, p := range ps {
		if p.Kind == av.KindVideo && !p.Header && i%3 == 0 {
			q := *p
			q.Data = []byte{0, 0, 0, 99, 0x65} // NAL length past the end
			p = &q
		}
		f.WritePacket(p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp := get(t, ctx, srv.URL+"/live/x/index.m3u8")
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HLS after bad media: %d", resp.StatusCode)
	}
}
