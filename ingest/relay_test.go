package ingest

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
)

// relayPair starts unit b's RTMP server (with a fake sink) and returns a
// Relay at unit a that relays to it.
func relayPair(t *testing.T, secretA, secretB string) (*Relay, *rtmpFakeSink, *rtmpFakeSink, *rtmpLogs) {
	t.Helper()
	sinkB := newRTMPFakeSink()
	srvB, logsB := rtmpTestServer(t, RTMPConfig{RelaySecret: secretB}, Deps{Sink: sinkB, Auth: &rtmpFakeAuth{token: "tok"}}, nil)
	sinkA := newRTMPFakeSink()
	_, log := newRTMPLogs(t)
	r := NewRelay(sinkA, RelayConfig{Self: "a", Secret: secretA,
		Units: []Unit{{Name: "a", Relay: "127.0.0.1:1"}, {Name: "b", Relay: srvB.Addr().String()}}}, log)
	t.Cleanup(r.Close)
	return r, sinkA, sinkB, logsB
}

func TestRelayCarriesFeedUnchanged(t *testing.T) {
	clip := rtmpReadClip(t, rtmpClip(t, 4))
	r, sinkA, sinkB, _ := relayPair(t, "s3cret", "s3cret")
	w, err := r.Publish("live", "cam", "backup", av.Source{Protocol: "rtmp", Remote: "enc"})
	if err != nil {
		t.Fatal(err)
	}
	wb := sinkB.waitWriter(t, 1)
	if wb.stream != "live/cam" || wb.feed != "backup" || wb.src.Protocol != RelayProtocol || !strings.Contains(wb.src.Remote, "unit a") {
		t.Fatalf("unit b got %s feed %s from %+v", wb.stream, wb.feed, wb.src)
	}
	for i, p := range clip {
		w.WritePacket(p)
		if i%20 == 0 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	w.Unpublish()
	w.Close()
	rtmpWaitFor(t, 10*time.Second, "relay to end", wb.isClosed)
	got := wb.packets()
	if a := sinkA.all()[0].count(); a != len(clip) {
		t.Errorf("unit a's own feed got %d packets, want %d", a, len(clip))
	}
	if len(got) != len(clip) {
		t.Fatalf("unit b got %d packets, want %d", len(got), len(clip))
	}
	for i := range clip {
		a, b := clip[i], got[i]
		if a.Kind != b.Kind || a.Header != b.Header || a.Key != b.Key || a.DTS != b.DTS || a.CTS != b.CTS || !bytes.Equal(a.Data, b.Data) {
			t.Fatalf("packet %d differs: sent %v %v dts %v, got %v %v dts %v", i, a.Kind, a.Key, a.DTS, b.Kind, b.Key, b.DTS)
		}
	}
	wb.mu.Lock()
	clean := wb.unpublished
	wb.mu.Unlock()
	if !clean {
		t.Error("a clean end at unit a is not a clean end at unit b")
	}
}

func TestRelayReconnectsWithGOP(t *testing.T) {
	clip := rtmpReadClip(t, rtmpClip(t, 6))
	r, _, sinkB, _ := relayPair(t, "s3cret", "s3cret")
	w, err := r.Publish("live", "cam", "main", av.Source{Protocol: "rtmp"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	first := sinkB.waitWriter(t, 1)
	half := len(clip) / 2
	// Unit b has accepted the publish, but the link may not have taken its
	// start yet (headers and the current GOP, what was queued before it
	// dropped): packets written in between that are older than the GOP
	// are rightly left behind, and the count below would miss them. The
	// first packet at unit b says the link is past its start.
	w.WritePacket(clip[0])
	rtmpWaitFor(t, 10*time.Second, "the link sending", func() bool { return first.count() >= 1 })
	for _, p := range clip[1:half] {
		w.WritePacket(p)
	}
	rtmpWaitFor(t, 10*time.Second, "first half at unit b", func() bool { return first.count() >= half-5 })
	first.kick() // unit b drops the relay connection
	second := sinkB.waitWriter(t, 2)
	for _, p := range clip[half:] {
		w.WritePacket(p)
		time.Sleep(time.Millisecond)
	}
	rtmpWaitFor(t, 10*time.Second, "second half at unit b", func() bool {
		pk := second.packets()
		return len(pk) > 0 && pk[len(pk)-1].DTS == clip[len(clip)-1].DTS
	})
	pk := second.packets()
	// The new session starts with the headers and a keyframe, then runs
	// in order to the end without a repeat.
	var hdr int
	for hdr < len(pk) && (pk[hdr].Header || pk[hdr].Kind == av.KindData) {
		hdr++
	}
	if hdr < 2 || hdr == len(pk) {
		t.Fatalf("reconnected session starts with %d header packets", hdr)
	}
	var firstVideo *av.Packet
	for _, p := range pk[hdr:] {
		if p.Kind == av.KindVideo {
			firstVideo = p
			break
		}
	}
	if firstVideo == nil || !firstVideo.Key {
		t.Fatal("reconnected session does not start at a keyframe")
	}
	var last [2]time.Duration
	for i, p := range pk[hdr:] {
		k := 0
		if p.Kind == av.KindAudio {
			k = 1
		}
		if i > 0 && p.DTS <= last[k] && last[k] != 0 {
			t.Fatalf("packet %d of the new session goes back: %v after %v", i, p.DTS, last[k])
		}
		last[k] = p.DTS
	}
}

func TestRelayWrongSecretRefused(t *testing.T) {
	r, _, sinkB, logsB := relayPair(t, "wrong", "s3cret")
	w, err := r.Publish("live", "cam", "main", av.Source{Protocol: "rtmp"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	logsB.waitFor(t, "wrong relay secret")
	if strings.Contains(logsB.String(), "wrong&") || strings.Contains(logsB.String(), "relay=wrong") {
		t.Error("the relay secret appears in the log")
	}
	if n := sinkB.calls(); n != 0 {
		t.Errorf("unit b's sink got %d publishes from a relay with a wrong secret", n)
	}
}

// A feed that came from a relay is not relayed again.
func TestRelayNoLoop(t *testing.T) {
	r, _, sinkB, _ := relayPair(t, "s3cret", "s3cret")
	w, err := r.Publish("live", "cam", "main", av.Source{Protocol: RelayProtocol})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, ok := w.(*relayTee); ok {
		t.Fatal("a relayed feed was wrapped for relaying")
	}
	time.Sleep(200 * time.Millisecond)
	if n := sinkB.calls(); n != 0 {
		t.Errorf("relayed feed relayed again: %d publishes at unit b", n)
	}
}
