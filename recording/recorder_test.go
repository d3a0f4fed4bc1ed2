package recording

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

// newTestRecorder starts a recorder over src with a media server for its
// playback URLs.
func newTestRecorder(t *testing.T, cfg Config, src Source, ev *events) *Recorder {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	var h http.Handler = http.NotFoundHandler()
	var rec atomic.Pointer[Recorder]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r := rec.Load(); r != nil {
			r.MediaHandler().ServeHTTP(w, req)
			return
		}
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	cfg.PublicURL = srv.URL
	deps := Deps{Source: src, Log: testLog(t)}
	if ev != nil {
		deps.Events = ev.add
	}
	r, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	rec.Store(r)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func getBody(t *testing.T, s Sink, key string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, err := s.Get(ctx, key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return b
}

var extinfRE = regexp.MustCompile(`(?m)^#EXTINF:([0-9.]+),\n(\S+)$`)

// playlistSegments returns the segment URIs and durations of a playlist.
func playlistSegments(pl string) ([]string, []float64) {
	var uris []string
	var durs []float64
	for _, m := range extinfRE.FindAllStringSubmatch(pl, -1) {
		d, _ := strconv.ParseFloat(m[1], 64)
		uris, durs = append(uris, m[2]), append(durs, d)
	}
	return uris, durs
}

// probe returns ffprobe's format duration and the count of decoded video
// frames of url.
func probe(t *testing.T, url string) (float64, int) {
	t.Helper()
	out, errOut, err := run(t, 60*time.Second, "ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
		"-show_entries", "format=duration:stream=nb_read_frames", "-of", "default=nw=1", url)
	if err != nil {
		t.Fatalf("ffprobe %s: %v: %s", url, err, errOut)
	}
	var dur float64
	var frames int
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "duration="); ok {
			dur, _ = strconv.ParseFloat(v, 64)
		}
		if v, ok := strings.CutPrefix(line, "nb_read_frames="); ok {
			frames, _ = strconv.Atoi(v)
		}
	}
	return dur, frames
}

// decodeErrors decodes every frame of url and returns ffmpeg's complaints.
func decodeErrors(t *testing.T, url string) string {
	t.Helper()
	_, errOut, err := run(t, 90*time.Second, "ffmpeg", "-nostdin", "-v", "error", "-i", url, "-f", "null", "-")
	if err != nil {
		return fmt.Sprintf("%v: %s", err, errOut)
	}
	return errOut
}

// TestRecordS3 records 30 s of a stream (played at 6× real time) into a
// real MinIO and checks the VOD playlist, playback through presigned URLs
// and decoding.
func TestRecordS3(t *testing.T) {
	need(t, "ffprobe")
	mn := startMinio(t)
	sink := mn.makeBucket(t, "vod")
	c := makeClip(t, 10, "640x360")
	src := &testStream{}
	ev := &events{}
	r := newTestRecorder(t, Config{Sink: SinkS3, S3: mn.s3Config("vod"), SessionGap: 300 * time.Millisecond}, src, ev)
	r.Set("live", "cam", true)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waitFor(t, 5*time.Second, "recorder subscribed", func() bool { return r.Status("live", "cam").State == "waiting" })
	pushed := time.Now()
	played := src.publish(ctx, c, 30*time.Second, 6)
	waitFor(t, 30*time.Second, "session complete", func() bool { return len(ev.of(EventSessionComplete)) == 1 })
	if d := src.drops.Load(); d != 0 {
		t.Errorf("the recorder made the stream drop %d packets", d)
	}

	spooled := ev.of(EventSegmentSpooled)
	recs, err := r.List(ctx, "live", "cam")
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 {
		t.Fatalf("%d recordings listed, want 1: %+v", len(recs), recs)
	}
	rec := recs[0]
	if rec.Live || rec.Segments != len(spooled) || !strings.HasPrefix(rec.PlaylistURL, "http://"+mn.addr+"/vod/live/cam/") {
		t.Fatalf("listing %+v, want ended with %d segments and a presigned playlist URL", rec, len(spooled))
	}

	// The playlist in MinIO lists every segment, in order, and is VOD.
	pl := string(getBody(t, sink, "live/cam/"+rec.Session+"/"+playlistName))
	uris, durs := playlistSegments(pl)
	if len(uris) != len(spooled) {
		t.Fatalf("playlist lists %d segments, %d were spooled:\n%s", len(uris), len(spooled), pl)
	}
	for i, u := range uris {
		if u != segmentFile(spooled[i].Seq) {
			t.Fatalf("playlist entry %d is %s, want %s", i, u, segmentFile(spooled[i].Seq))
		}
	}
	m, err := r.readManifest(ctx, "live/cam/"+rec.Session+"/"+manifestName)
	if err != nil {
		t.Fatal(err)
	}
	// The first frame went out when the push started. The recorder, which
	// was waiting, joins within its poll interval and dates the cached GOP
	// back by media age, but not before it last saw the stream not live
	// (at 6x, media age is six times the wall age).
	if d := m.Segments[0].Time.Sub(pushed); d < -time.Second || d > time.Second {
		t.Errorf("first program date-time %v is %v from the start of the push", m.Segments[0].Time, d)
	}
	for _, tag := range []string{"#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-ENDLIST", "#EXT-X-PROGRAM-DATE-TIME:", "#EXT-X-TARGETDURATION:6"} {
		if !strings.Contains(pl, tag) {
			t.Errorf("playlist lacks %s:\n%s", tag, pl)
		}
	}
	for i, d := range durs[:len(durs)-1] {
		if d < 5.9 || d > 6.1 {
			t.Errorf("segment %d lasts %.3f s, want 6 (2 s GOP, 6 s target)", i+1, d)
		}
	}
	// Objects carry their content type and cache control.
	st, err := sink.mc.StatObject(ctx, "vod", "live/cam/"+rec.Session+"/"+uris[0], minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st.ContentType != contentTypeTS || st.Metadata.Get("Cache-Control") == "" {
		t.Errorf("segment content type %q, cache control %q", st.ContentType, st.Metadata.Get("Cache-Control"))
	}

	// Play through the presigned segment URLs.
	url := rec.URL
	body := httpGet(t, url)
	if n := strings.Count(body, "X-Amz-Signature="); n != len(spooled) {
		t.Fatalf("served playlist has %d presigned segment URLs, want %d:\n%s", n, len(spooled), body)
	}
	dur, frames := probe(t, url)
	seg := DefaultConfig().SegmentDuration.Seconds()
	if d := dur - played.Seconds(); d > seg || d < -seg {
		t.Errorf("ffprobe duration %.2f s, pushed %.2f s: more than one segment apart", dur, played.Seconds())
	}
	if d := float64(frames)/25 - played.Seconds(); d > seg || d < -seg {
		t.Errorf("%d video frames (%.2f s) decoded, pushed %.2f s", frames, float64(frames)/25, played.Seconds())
	}
	if e := decodeErrors(t, url); e != "" {
		t.Errorf("decoding the recording: %s", e)
	}
	t.Logf("pushed %.2f s; recorded %d segments, ffprobe %.2f s, %d frames", played.Seconds(), len(uris), dur, frames)

	// Signed node URLs refuse tampering.
	bad := strings.Replace(url, "sig=", "sig=x", 1)
	resp, err := http.Get(bad)
	if err != nil {
		t.Fatalf("tampered URL: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("tampered URL: %s, want 403", resp.Status)
	}
	// The spool is empty again.
	waitFor(t, 5*time.Second, "spool emptied", func() bool { return r.SinkStatus().SpoolBytes == 0 && dirEmpty(r.cfg.SpoolDir) })
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b)
}

func dirEmpty(dir string) bool {
	n := 0
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	return n == 0
}

// TestS3Outage stops MinIO for 20 s in the middle of a recording: the
// recording goes on into the spool, and afterwards every segment is in
// MinIO with the size and checksum the spool recorded, and the playlist is
// complete.
func TestS3Outage(t *testing.T) {
	mn := startMinio(t)
	sink := mn.makeBucket(t, "vod")
	c := makeClip(t, 10, "640x360")
	src := &testStream{}
	ev := &events{}
	cfg := Config{Sink: SinkS3, S3: mn.s3Config("vod"), SessionGap: 300 * time.Millisecond,
		SegmentDuration: 2 * time.Second, RetryMin: 200 * time.Millisecond, RetryMax: 2 * time.Second}
	r := newTestRecorder(t, cfg, src, ev)
	r.Set("live", "cam", true)
	waitFor(t, 5*time.Second, "recorder subscribed", func() bool { return r.Status("live", "cam").State == "waiting" })

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const outage = 20 * time.Second
	done := make(chan time.Duration, 1)
	go func() { done <- src.publish(ctx, c, 45*time.Second, 1.5) }() // 30 s of wall time
	time.Sleep(4 * time.Second)
	mn.stop()
	downAt := time.Now()
	var maxPending int
	for time.Since(downAt) < outage {
		time.Sleep(250 * time.Millisecond)
		maxPending = max(maxPending, r.Status("live", "cam").Pending)
	}
	st := r.Status("live", "cam")
	if st.State != "recording" || !strings.Contains(st.Error, "unreachable") {
		t.Errorf("status during the outage: %+v; want recording with the sink error", st)
	}
	mn.start()
	played := <-done
	waitFor(t, 40*time.Second, "session complete", func() bool { return len(ev.of(EventSessionComplete)) == 1 })
	if want := int(float64(outage/cfg.SegmentDuration)*1.5) / 2; maxPending < want {
		t.Errorf("at most %d segments were pending during a %v outage", maxPending, outage)
	}
	if len(ev.of(EventSinkError)) == 0 || len(ev.of(EventSinkOK)) == 0 {
		t.Errorf("want sink_error and sink_ok events, got %d and %d", len(ev.of(EventSinkError)), len(ev.of(EventSinkOK)))
	}
	if d := src.drops.Load(); d != 0 {
		t.Errorf("the recorder made the stream drop %d packets", d)
	}

	spooled := ev.of(EventSegmentSpooled)
	session := spooled[0].Session
	objs, err := sink.List(ctx, "live/cam/"+session+"/")
	if err != nil {
		t.Fatal(err)
	}
	segs := map[string]ObjectInfo{}
	for _, o := range objs {
		if strings.HasSuffix(o.Key, ".ts") {
			segs[o.Key] = o
		}
	}
	if len(segs) != len(spooled) {
		t.Fatalf("%d segments in MinIO, %d spooled", len(segs), len(spooled))
	}
	for _, e := range spooled {
		key := "live/cam/" + session + "/" + segmentFile(e.Seq)
		o, ok := segs[key]
		if !ok || o.Size != e.Size {
			t.Fatalf("%s: in MinIO %v with %d bytes, spooled %d bytes", key, ok, o.Size, e.Size)
		}
		sum := sha256.Sum256(getBody(t, sink, key))
		if hex.EncodeToString(sum[:]) != e.SHA256 {
			t.Fatalf("%s: SHA-256 differs from the spool's record", key)
		}
	}
	pl := string(getBody(t, sink, "live/cam/"+session+"/"+playlistName))
	uris, durs := playlistSegments(pl)
	var total float64
	for _, d := range durs {
		total += d
	}
	if len(uris) != len(spooled) || !strings.Contains(pl, "#EXT-X-ENDLIST") {
		t.Fatalf("playlist lists %d of %d segments (ENDLIST %v)", len(uris), len(spooled), strings.Contains(pl, "#EXT-X-ENDLIST"))
	}
	if d := total - played.Seconds(); d > 2 || d < -2 {
		t.Errorf("playlist lasts %.2f s, pushed %.2f s", total, played.Seconds())
	}
	t.Logf("pushed %.1f s; %d segments, up to %d pending during the outage; all uploaded with matching SHA-256", played.Seconds(), len(spooled), maxPending)
}

// TestBadSinkConfig: a sink that cannot work is reported at start and in
// the status, and recording still spools (the stream is not touched).
func TestBadSinkConfig(t *testing.T) {
	mn := startMinio(t)
	mn.makeBucket(t, "vod")
	c := makeClip(t, 10, "640x360")
	closed := "127.0.0.1:" + strconv.Itoa(freePort(t))
	tests := []struct {
		name string
		s3   func(S3Config) S3Config
		want string
	}{
		{"wrong credentials", func(c S3Config) S3Config { c.SecretKey = "wrong-secret"; return c }, "credentials refused"},
		{"missing bucket", func(c S3Config) S3Config { c.Bucket = "no-such-bucket"; return c }, `bucket "no-such-bucket" does not exist`},
		{"unreachable endpoint", func(c S3Config) S3Config { c.Endpoint = closed; return c }, "endpoint unreachable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := &testStream{}
			ev := &events{}
			cfg := Config{Sink: SinkS3, S3: tc.s3(mn.s3Config("vod")), SegmentDuration: 2 * time.Second, SessionGap: time.Minute}
			r := newTestRecorder(t, cfg, src, ev)
			if st := r.SinkStatus(); st.OK || !strings.Contains(st.Error, tc.want) {
				t.Fatalf("sink status after start: %+v, want an error with %q", st, tc.want)
			}
			r.Set("live", "cam", true)
			waitFor(t, 5*time.Second, "recorder subscribed", func() bool { return r.Status("live", "cam").State == "waiting" })
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			src.publish(ctx, c, 7*time.Second, 7)
			// The recorder cuts and spools on its own goroutine: on a
			// busy machine the third segment lands after publish returns.
			waitFor(t, 10*time.Second, "3 segments spooled", func() bool { return len(ev.of(EventSegmentSpooled)) >= 3 })
			st := r.Status("live", "cam")
			if !strings.Contains(st.Error, "s3") || len(ev.of(EventSegmentUploaded)) != 0 {
				t.Errorf("stream status %+v; uploaded %d", st, len(ev.of(EventSegmentUploaded)))
			}
			if d := src.drops.Load(); d != 0 {
				t.Errorf("the stream dropped %d packets", d)
			}
			t.Logf("status error: %s", st.Error)
		})
	}
}

// downSink refuses every upload.
type downSink struct{ LocalSink }

func (downSink) Put(context.Context, Object) error { return errors.New("store down") }
func (downSink) Check(context.Context) error       { return errors.New("store down") }

// TestSpoolFull: with the store away and the spool full, the oldest live
// session stops recording (with an event) and the younger one goes on.
func TestSpoolFull(t *testing.T) {
	c := makeClip(t, 10, "640x360")
	var clipBytes int64
	for _, p := range c.media {
		clipBytes += int64(len(p.Data))
	}
	a, b := &testStream{}, &testStream{}
	src := multiSource{"old": a, "new": b}
	ev := &events{}
	dir := t.TempDir()
	// About 8 s of one stream fits.
	limit := clipBytes * 8 / 10
	cfg := Config{DataDir: dir, SegmentDuration: 2 * time.Second, SessionGap: time.Minute, SpoolMaxBytes: limit}
	r := newTestRecorderSink(t, cfg, src, ev, &downSink{LocalSink{dir: dir}})
	r.Set("live", "old", true)
	r.Set("live", "new", true)
	waitFor(t, 5*time.Second, "recorders subscribed", func() bool {
		return r.Status("live", "old").State == "waiting" && r.Status("live", "new").State == "waiting"
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	doneA := make(chan struct{})
	go func() { a.publish(ctx, c, 20*time.Second, 5); close(doneA) }()
	time.Sleep(1100 * time.Millisecond) // a new session id (one per second)
	b.publish(ctx, c, 20*time.Second, 5)
	<-doneA
	stops := ev.of(EventRecordingStopped)
	if len(stops) == 0 || stops[0].Name != "old" || !strings.Contains(stops[0].Error, "spool full") {
		t.Fatalf("stop events %+v, want the old stream stopped first for a full spool", stops)
	}
	if a.drops.Load() != 0 || b.drops.Load() != 0 {
		t.Errorf("streams dropped %d and %d packets", a.drops.Load(), b.drops.Load())
	}
	t.Logf("limit %d bytes; stops: %+v", limit, stops)
}

type multiSource map[string]*testStream

func (m multiSource) Subscribe(app, name string) (PacketReader, error) {
	s := m[name]
	if s == nil {
		return nil, errors.New("no such stream")
	}
	return s.Subscribe(app, name)
}

func newTestRecorderSink(t *testing.T, cfg Config, src Source, ev *events, sink Sink) *Recorder {
	t.Helper()
	r, err := New(cfg, Deps{Source: src, Log: testLog(t), Events: ev.add, Sink: sink})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// TestS3SinkPut: objects above the part size go up in parts; the stored
// bytes, type, cache control and SHA-256 metadata are what was sent, and a
// wrong MD5 is refused.
func TestS3SinkPut(t *testing.T) {
	mn := startMinio(t)
	mn.makeBucket(t, "vod")
	cfg := mn.s3Config("vod")
	cfg.PartSize = 5 << 20
	cfg.Prefix = "rec"
	s, err := NewS3Sink(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, size := range []int{1000, 12 << 20} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(i * 7)
		}
		sha, md := digests(data)
		key := fmt.Sprintf("live/cam/20261201T100000Z/seg-%06d.ts", size)
		if err := s.Put(ctx, Object{Key: key, Body: bytes.NewReader(data), Size: int64(size), SHA256: sha, MD5: md,
			ContentType: contentTypeTS, CacheControl: "max-age=60"}); err != nil {
			t.Fatalf("put %d bytes: %v", size, err)
		}
		st, err := s.mc.StatObject(ctx, "vod", "rec/"+key, minio.StatObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		multipart := strings.Contains(st.ETag, "-")
		if multipart != (size > 5<<20) || st.ContentType != contentTypeTS || st.Metadata.Get("Cache-Control") != "max-age=60" ||
			st.UserMetadata["Sha256"] != sha {
			t.Errorf("%d bytes: etag %s, type %s, cache %q, meta %v", size, st.ETag, st.ContentType, st.Metadata.Get("Cache-Control"), st.UserMetadata)
		}
		if got := getBody(t, s, key); !bytes.Equal(got, data) {
			t.Errorf("%d bytes: stored bytes differ", size)
		}
	}
	objs, err := s.List(ctx, "live/cam/")
	if err != nil || len(objs) != 2 || !strings.HasPrefix(objs[0].Key, "live/cam/") {
		t.Fatalf("list: %v %+v", err, objs)
	}
	// Without credentials in the config, the AWS environment variables count.
	t.Setenv("AWS_ACCESS_KEY_ID", minioUser)
	t.Setenv("AWS_SECRET_ACCESS_KEY", minioPass)
	envCfg := cfg
	envCfg.AccessKey, envCfg.SecretKey = "", ""
	es, err := NewS3Sink(envCfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := es.Check(ctx); err != nil {
		t.Errorf("credentials from the environment: %v", err)
	}
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong")
	if es, _ = NewS3Sink(envCfg); es.Check(ctx) == nil {
		t.Errorf("wrong credentials from the environment accepted")
	}
	err = s.Put(ctx, Object{Key: "live/cam/20261201T100000Z/bad.ts", Body: bytes.NewReader([]byte("abc")), Size: 3,
		MD5: strings.Repeat("0", 32)})
	if err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("wrong MD5: %v", err)
	}
}
