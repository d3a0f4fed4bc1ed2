package recording

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLocalSessionGap records to the local sink: a publisher that comes
// back within session_gap continues the session after a discontinuity; one
// that comes back later starts a new session; switching recording off ends
// the session. Every segment starts with a keyframe, playback through the
// node decodes cleanly, and retention deletes old sessions.
func TestLocalSessionGap(t *testing.T) {
	need(t, "ffprobe")
	c := makeClip(t, 10, "640x360")
	src := &testStream{}
	ev := &events{}
	cfg := Config{SegmentDuration: 2 * time.Second, SessionGap: 1500 * time.Millisecond, RetentionDays: 1, Unit: "unit-b"}
	r := newTestRecorder(t, cfg, src, ev)
	r.Set("live", "cam", true)
	waitFor(t, 5*time.Second, "recorder subscribed", func() bool { return r.Status("live", "cam").State == "waiting" })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	p1 := src.publish(ctx, c, 6*time.Second, 8)
	time.Sleep(300 * time.Millisecond) // back within the gap
	p2 := src.publish(ctx, c, 4*time.Second, 8)
	waitFor(t, 10*time.Second, "first session complete", func() bool { return len(ev.of(EventSessionComplete)) == 1 })
	if n := len(ev.of(EventSessionStarted)); n != 1 {
		t.Fatalf("%d sessions started for a publisher back within the gap, want 1", n)
	}
	recs, err := r.List(ctx, "live", "cam")
	if err != nil || len(recs) != 1 {
		t.Fatalf("list: %v %+v", err, recs)
	}
	first := recs[0]
	if !strings.HasSuffix(first.Session, "Z-unit-b") {
		t.Errorf("session id %q lacks the unit", first.Session)
	}
	if d := first.Duration - (p1 + p2).Seconds(); d > 0.5 || d < -0.5 {
		t.Errorf("session lasts %.2f s, pushed %.2f s in two runs", first.Duration, (p1 + p2).Seconds())
	}
	pl := httpGet(t, first.URL)
	if strings.Count(pl, "#EXT-X-DISCONTINUITY\n") != 1 || !strings.Contains(pl, "#EXT-X-ENDLIST") {
		t.Fatalf("want one discontinuity and ENDLIST:\n%s", pl)
	}
	if !strings.Contains(pl, "seg-000001.ts?exp=") {
		t.Fatalf("segments are not node-signed URLs:\n%s", pl)
	}
	if e := decodeErrors(t, first.URL); e != "" {
		t.Errorf("decoding: %s", e)
	}
	segs, _ := filepath.Glob(filepath.Join(r.cfg.Local.Dir, "live", "cam", first.Session, "seg-*.ts"))
	if len(segs) != first.Segments || len(segs) < 5 {
		t.Fatalf("%d segment files, listing says %d", len(segs), first.Segments)
	}
	for _, f := range segs {
		out, errOut, err := run(t, 20*time.Second, "ffprobe", "-v", "error", "-select_streams", "v:0", "-read_intervals", "%+#1",
			"-show_entries", "frame=key_frame", "-of", "csv=p=0", f)
		if err != nil || !strings.HasPrefix(strings.TrimSpace(out), "1") {
			t.Errorf("%s: first frame key_frame=%q (%v %s)", filepath.Base(f), out, err, errOut)
		}
	}

	// Back after the gap: a new session; switched off while live: it ends.
	done := make(chan struct{})
	go func() { src.publish(ctx, c, 20*time.Second, 4); close(done) }()
	waitFor(t, 10*time.Second, "second session recording", func() bool { return r.Status("live", "cam").Segments >= 2 })
	r.Set("live", "cam", false)
	waitFor(t, 10*time.Second, "second session complete", func() bool { return len(ev.of(EventSessionComplete)) == 2 })
	<-done
	recs, _ = r.List(ctx, "live", "cam")
	if len(recs) != 2 || recs[0].Live || recs[0].Session == first.Session {
		t.Fatalf("want two ended sessions, newest first: %+v", recs)
	}

	// Retention: nothing is a day old yet; tomorrow both go.
	if n, err := r.Expire(ctx, time.Now()); err != nil || n != 0 {
		t.Fatalf("expire now: %d %v", n, err)
	}
	if n, err := r.Expire(ctx, time.Now().Add(25*time.Hour)); err != nil || n != 2 {
		t.Fatalf("expire tomorrow: %d %v", n, err)
	}
	if !dirEmpty(r.cfg.Local.Dir) {
		t.Errorf("local sink not empty after retention")
	}
}
