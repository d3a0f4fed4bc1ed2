package recording

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func testManifest(n int, ended bool) Manifest {
	start := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	m := Manifest{App: "live", Name: "cam", Session: sessionID(start, ""), Start: start, Ended: ended, Segments: []Segment{}}
	for i := 1; i <= n; i++ {
		m.Segments = append(m.Segments, Segment{Seq: i, File: segmentFile(i), Size: 100, SHA256: strings.Repeat("a", 64),
			MD5: strings.Repeat("b", 32), Duration: 6, Time: start.Add(time.Duration(i-1) * 6 * time.Second), Uploaded: true})
	}
	return m
}

func TestPlaylist(t *testing.T) {
	tests := []struct {
		name      string
		m         func() Manifest
		n         int
		want      []string
		dontWant  []string
		segments  int
		targetDur string
	}{
		{
			name: "live session is an EVENT playlist without ENDLIST",
			m:    func() Manifest { return testManifest(3, false) }, n: 3,
			want:     []string{"#EXT-X-PLAYLIST-TYPE:EVENT", "#EXT-X-PROGRAM-DATE-TIME:2026-12-01T10:00:06.000Z", "seg-000003.ts"},
			dontWant: []string{"#EXT-X-ENDLIST", "VOD"}, segments: 3, targetDur: "6",
		},
		{
			name: "ended session is VOD with ENDLIST",
			m:    func() Manifest { return testManifest(2, true) }, n: 2,
			want: []string{"#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-ENDLIST"}, segments: 2, targetDur: "6",
		},
		{
			name: "ended but not all uploaded stays EVENT and lists the uploaded prefix",
			m:    func() Manifest { return testManifest(4, true) }, n: 2,
			want: []string{"#EXT-X-PLAYLIST-TYPE:EVENT", "seg-000002.ts"}, dontWant: []string{"seg-000003.ts", "#EXT-X-ENDLIST"},
			segments: 2, targetDur: "6",
		},
		{
			name: "discontinuity before a segment of a later publisher run",
			m: func() Manifest {
				m := testManifest(3, true)
				m.Segments[2].Discontinuity = true
				m.Segments[2].Duration = 7.2
				return m
			}, n: 3,
			want: []string{"#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2026-12-01T10:00:12.000Z\n#EXTINF:7.200,\nseg-000003.ts"}, segments: 3, targetDur: "8",
		},
		{
			name: "empty session",
			m:    func() Manifest { return testManifest(0, false) }, n: 0,
			dontWant: []string{"#EXTINF"}, segments: 0, targetDur: "1",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.m()
			pl := string(m.Playlist(tc.n, nil))
			if !strings.HasPrefix(pl, "#EXTM3U\n") || !strings.Contains(pl, "#EXT-X-TARGETDURATION:"+tc.targetDur+"\n") {
				t.Errorf("header wrong:\n%s", pl)
			}
			for _, w := range tc.want {
				if !strings.Contains(pl, w) {
					t.Errorf("lacks %q:\n%s", w, pl)
				}
			}
			for _, w := range tc.dontWant {
				if strings.Contains(pl, w) {
					t.Errorf("has %q:\n%s", w, pl)
				}
			}
			if uris, _ := playlistSegments(pl); len(uris) != tc.segments {
				t.Errorf("%d segments, want %d", len(uris), tc.segments)
			}
		})
	}
}

func TestPlaylistURIs(t *testing.T) {
	m := testManifest(2, true)
	pl := string(m.Playlist(2, func(f string) string { return "https://x/" + f + "?sig=1" }))
	if !strings.Contains(pl, "\nhttps://x/seg-000001.ts?sig=1\n") {
		t.Fatalf("uri not mapped:\n%s", pl)
	}
}

func TestParseManifest(t *testing.T) {
	good := testManifest(2, true)
	tests := []struct {
		name    string
		change  func(*Manifest)
		wantErr string
	}{
		{"valid", func(*Manifest) {}, ""},
		{"bad app", func(m *Manifest) { m.App = "../x" }, "invalid app"},
		{"bad session", func(m *Manifest) { m.Session = "yesterday" }, "session id"},
		{"session of a unit", func(m *Manifest) { m.Session += "-b" }, ""},
		{"session with a bad unit", func(m *Manifest) { m.Session += "-../b" }, "unit"},
		{"seq not increasing", func(m *Manifest) { m.Segments[1].Seq = 1; m.Segments[1].File = segmentFile(1) }, "seq"},
		{"file does not match seq", func(m *Manifest) { m.Segments[0].File = "../../etc/passwd" }, "file"},
		{"checksum missing", func(m *Manifest) { m.Segments[0].SHA256 = "" }, "checksum"},
		{"negative duration", func(m *Manifest) { m.Segments[0].Duration = -1 }, "duration"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := good
			m.Segments = append([]Segment(nil), good.Segments...)
			tc.change(&m)
			b, _ := json.Marshal(&m)
			_, err := parseManifest(b)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one with %q", err, tc.wantErr)
			}
		})
	}
}

// FuzzParseManifest: manifests come from disk and from the store; a bad one
// must be refused, never crash, and a good one must render a playlist.
func FuzzParseManifest(f *testing.F) {
	m := testManifest(3, true)
	b, _ := json.Marshal(&m)
	f.Add(b)
	f.Add([]byte(`{"app":"live","name":"x","session":"20261201T100000Z","segments":[{"seq":1}]}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseManifest(b)
		if err != nil {
			return
		}
		pl := m.Playlist(m.uploadedPrefix(), nil)
		if !strings.HasPrefix(string(pl), "#EXTM3U\n") {
			t.Fatalf("playlist %q", pl)
		}
		for _, s := range m.Segments {
			if strings.ContainsAny(s.File, "/\\\n") {
				t.Fatalf("file name %q accepted", s.File)
			}
		}
	})
}

func TestConfigDefaults(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"defaults under data_dir", Config{DataDir: "/d"}, ""},
		{"no data dir", Config{}, "data_dir"},
		{"unknown sink", Config{DataDir: "/d", Sink: "ftp"}, "sink"},
		{"s3 needs an endpoint", Config{DataDir: "/d", Sink: SinkS3, S3: S3Config{Bucket: "b"}}, "endpoint"},
		{"s3 needs a bucket", Config{DataDir: "/d", Sink: SinkS3, S3: S3Config{Endpoint: "h:1"}}, "bucket"},
		{"s3 part size", Config{DataDir: "/d", Sink: SinkS3, S3: S3Config{Endpoint: "h:1", Bucket: "b", PartSize: 1 << 20}}, "part_size"},
		{"short segments", Config{DataDir: "/d", SegmentDuration: time.Millisecond}, "segment_duration"},
		{"negative retention", Config{DataDir: "/d", RetentionDays: -1}, "retention_days"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.cfg.withDefaults()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.SegmentDuration != 6*time.Second || c.SessionGap != 30*time.Second || c.Sink != SinkLocal ||
				c.SpoolDir != "/d/recording-spool" || c.Local.Dir != "/d/recordings" || c.RetentionDays != 0 {
				t.Fatalf("defaults %+v", c)
			}
		})
	}
}

func TestCollector(t *testing.T) {
	r, err := New(Config{DataDir: t.TempDir()}, Deps{Source: &testStream{}})
	if err != nil {
		t.Fatal(err)
	}
	r.count.spooled.Add(3)
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(r.Collector()); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		m := mf.GetMetric()[0]
		if c := m.GetCounter(); c != nil {
			got[mf.GetName()] = c.GetValue()
		} else {
			got[mf.GetName()] = m.GetGauge().GetValue()
		}
	}
	if len(got) != 9 || got["livefuse_recording_segments_spooled_total"] != 3 || got["livefuse_recording_sink_ok"] != 1 {
		t.Fatalf("metrics %v", got)
	}
}

// TestWentOut: program date-times of the packets a reader starts with. A
// stream that arrived faster than real time (an encoder catching up, a
// relay's backlog, the tests' 6x push) has more media age than wall age:
// its first frames are dated no earlier than when the recorder last saw
// the stream not live.
func TestWentOut(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	s := time.Second
	tests := []struct {
		name        string
		dts, newest time.Duration
		notLive     time.Time
		want        time.Time
	}{
		{"newest packet", 10 * s, 10 * s, time.Time{}, now},
		{"cached GOP, live from the start", 8 * s, 10 * s, time.Time{}, now.Add(-2 * s)},
		{"cached GOP of a real-time run", 8 * s, 10 * s, now.Add(-5 * s), now.Add(-2 * s)},
		{"cached GOP of a fast run", 8 * s, 10 * s, now.Add(-300 * time.Millisecond), now.Add(-300 * time.Millisecond)},
		{"a newer packet after an older one", 11 * s, 10 * s, time.Time{}, now},
		{"timestamps a minute apart", 0, 2 * time.Minute, time.Time{}, now},
	}
	for _, tt := range tests {
		if got := wentOut(tt.dts, tt.newest, now, tt.notLive); !got.Equal(tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, got.Sub(now), tt.want.Sub(now))
		}
	}
}
