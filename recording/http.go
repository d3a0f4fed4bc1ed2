package recording

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/livefuse/livefuse/av"
)

// MediaPrefix is the path under which the node serves recordings (signed
// playlists, and segments of the local sink).
const MediaPrefix = "/recordings/"

// maxListedSessions bounds one listing.
const maxListedSessions = 1000

// Recording describes one session for playback.
type Recording struct {
	App      string    `json:"app"`
	Name     string    `json:"name"`
	Session  string    `json:"session"`
	Start    time.Time `json:"start"`
	End      time.Time `json:"end,omitzero"`
	Live     bool      `json:"live"`
	Duration float64   `json:"duration"`
	Segments int       `json:"segments"`
	Bytes    int64     `json:"bytes"`
	Stopped  string    `json:"stopped,omitempty"`
	// URL plays the session: a node-signed playlist whose segments are
	// presigned S3 URLs (S3 sink) or node-signed URLs (local sink).
	URL string `json:"url"`
	// PlaylistURL is a presigned URL of the stored playlist itself (S3
	// only); its segment URIs are relative, so it suits tools with access
	// to the bucket rather than players.
	PlaylistURL string    `json:"playlist_url,omitempty"`
	Expires     time.Time `json:"expires"`
	// Damaged says why the session's manifest could not be read (cut
	// short, not JSON, inconsistent, or unreadable from the sink). Such a
	// session has no playlist (URL is empty); SegmentFiles lists the
	// segments the sink holds for it, with URLs to fetch them, and
	// Segments and Bytes count them.
	Damaged      string        `json:"damaged,omitempty"`
	SegmentFiles []SegmentFile `json:"segment_files,omitempty"`
}

// SegmentFile is one stored segment of a damaged session.
type SegmentFile struct {
	File  string `json:"file"`
	Bytes int64  `json:"bytes"`
	// URL fetches it: presigned (S3) or node-signed (local sink).
	URL string `json:"url"`
}

// maxDamagedSegments bounds the segments listed for one damaged session
// (a day of 6 s segments is 14400); Segments still counts them all.
const maxDamagedSegments = 20000

// RecordingList is the body of GET /api/v1/recordings.
type RecordingList struct {
	Recordings []Recording `json:"recordings"`
	Sink       SinkStatus  `json:"sink"`
}

// List returns the sessions of app/name (all streams when app is ""),
// newest first.
func (r *Recorder) List(ctx context.Context, app, name string) ([]Recording, error) {
	prefix := ""
	if app != "" {
		prefix = app + "/" + name + "/"
	}
	objs, err := r.sink.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	bytesBySession := map[string]int64{}
	segsBySession := map[string][]ObjectInfo{}
	var manifests []string
	for _, o := range objs {
		dir, file, ok := cutLast(o.Key)
		if !ok {
			continue
		}
		bytesBySession[dir] += o.Size
		switch {
		case file == manifestName:
			manifests = append(manifests, o.Key)
		case strings.HasPrefix(file, "seg-") && strings.HasSuffix(file, ".ts"):
			segsBySession[dir] = append(segsBySession[dir], o)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(manifests)))
	if len(manifests) > maxListedSessions {
		manifests = manifests[:maxListedSessions]
	}
	exp := time.Now().Add(r.cfg.URLExpiry)
	out := []Recording{}
	for _, k := range manifests {
		dir, _, _ := cutLast(k)
		m, err := r.readManifest(ctx, k)
		if err != nil {
			r.log.Warn("recording list: damaged manifest", "key", k, "reason", err.Error())
			out = append(out, r.damaged(ctx, dir, err, segsBySession[dir], bytesBySession[dir], exp))
			continue
		}
		n := m.uploadedPrefix()
		rec := Recording{App: m.App, Name: m.Name, Session: m.Session, Start: m.Start, Live: !m.Ended,
			Segments: n, Bytes: bytesBySession[dir], Stopped: m.Stopped, Expires: exp}
		if m.Ended {
			rec.End = m.EndedAt
		}
		for _, s := range m.Segments[:n] {
			rec.Duration += s.Duration
		}
		rec.URL = r.cfg.PublicURL + r.signedPath(MediaPrefix+dir+"/"+playlistName, exp)
		if u, err := r.sink.URL(ctx, dir+"/"+playlistName, r.cfg.URLExpiry); err == nil && u != "" {
			rec.PlaylistURL = u
		}
		out = append(out, rec)
	}
	return out, nil
}

// damaged describes a session whose manifest could not be read: what its
// key tells (app, name, session start) and the segments the sink holds.
func (r *Recorder) damaged(ctx context.Context, dir string, cause error, segs []ObjectInfo, bytes int64, exp time.Time) Recording {
	rec := Recording{Damaged: "manifest " + manifestName + ": " + cause.Error(), Segments: len(segs), Bytes: bytes, Expires: exp}
	if parts := strings.Split(dir, "/"); len(parts) == 3 {
		rec.App, rec.Name, rec.Session = parts[0], parts[1], parts[2]
		rec.Start, _ = parseSessionID(parts[2])
	}
	for _, o := range segs[:min(len(segs), maxDamagedSegments)] {
		_, file, _ := cutLast(o.Key)
		u, err := r.sink.URL(ctx, o.Key, r.cfg.URLExpiry)
		if err != nil || u == "" {
			u = r.cfg.PublicURL + r.signedPath(MediaPrefix+o.Key, exp)
		}
		rec.SegmentFiles = append(rec.SegmentFiles, SegmentFile{File: file, Bytes: o.Size, URL: u})
	}
	return rec
}

func cutLast(key string) (dir, file string, ok bool) {
	i := strings.LastIndexByte(key, '/')
	if i < 0 {
		return "", "", false
	}
	return key[:i], key[i+1:], true
}

const maxManifestBytes = 256 << 20

func (r *Recorder) readManifest(ctx context.Context, key string) (*Manifest, error) {
	rc, err := r.sink.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxManifestBytes))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	return parseManifest(b)
}

// APIHandler serves GET /api/v1/recordings?stream=app/name (stream
// optional). The control API mounts it behind its bearer token.
func (r *Recorder) APIHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet {
			w.Header().Set("Allow", "GET")
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed"})
			return
		}
		var app, name string
		if s := req.URL.Query().Get("stream"); s != "" {
			app, name = splitKey(s)
			if !av.ValidName(app) || !av.ValidName(name) {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "stream: want app/name"})
				return
			}
		}
		ctx, cancel := context.WithTimeout(req.Context(), 15*time.Second)
		defer cancel()
		recs, err := r.List(ctx, app, name)
		if err != nil {
			writeJSON(w, http.StatusBadGateway, map[string]string{"error": "recording sink: " + err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, RecordingList{Recordings: recs, Sink: r.SinkStatus()})
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// signedPath appends an expiry and an HMAC signature to p.
func (r *Recorder) signedPath(p string, exp time.Time) string {
	e := strconv.FormatInt(exp.Unix(), 10)
	return p + "?exp=" + e + "&sig=" + r.sign(p, e)
}

func (r *Recorder) sign(p, exp string) string {
	h := hmac.New(sha256.New, r.secret)
	io.WriteString(h, p+"\n"+exp)
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

func (r *Recorder) verify(p string, q url.Values, now time.Time) error {
	e, sig := q.Get("exp"), q.Get("sig")
	exp, err := strconv.ParseInt(e, 10, 64)
	if err != nil || sig == "" {
		return errors.New("unsigned URL")
	}
	if now.Unix() > exp {
		return errors.New("URL expired")
	}
	if !hmac.Equal([]byte(sig), []byte(r.sign(p, e))) {
		return errors.New("bad signature")
	}
	return nil
}

// MediaHandler serves MediaPrefix/APP/NAME/SESSION/FILE with a signature
// from List: the playlist (rendered from the stored manifest, with
// presigned or node-signed segment URIs) and, for the local sink, the
// segments.
func (r *Recorder) MediaHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		p := req.URL.Path
		rest, ok := strings.CutPrefix(p, MediaPrefix)
		parts := strings.Split(rest, "/")
		if !ok || len(parts) != 4 || !av.ValidName(parts[0]) || !av.ValidName(parts[1]) {
			http.NotFound(w, req)
			return
		}
		if _, err := parseSessionID(parts[2]); err != nil {
			http.NotFound(w, req)
			return
		}
		if err := r.verify(p, req.URL.Query(), time.Now()); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		dir, file := strings.Join(parts[:3], "/"), parts[3]
		ctx := req.Context()
		switch {
		case file == playlistName:
			r.servePlaylist(ctx, w, req, dir)
		case strings.HasPrefix(file, "seg-") && strings.HasSuffix(file, ".ts"):
			r.serveObject(ctx, w, req, dir+"/"+file, contentTypeTS, r.cfg.S3.SegmentCacheControl)
		default:
			http.NotFound(w, req)
		}
	})
}

func (r *Recorder) servePlaylist(ctx context.Context, w http.ResponseWriter, req *http.Request, dir string) {
	m, err := r.readManifest(ctx, dir+"/"+manifestName)
	if errors.Is(err, os.ErrNotExist) {
		http.NotFound(w, req)
		return
	}
	if err != nil {
		http.Error(w, "recording sink: "+err.Error(), http.StatusBadGateway)
		return
	}
	exp := time.Now().Add(r.cfg.URLExpiry)
	var uerr error
	pl := m.Playlist(m.uploadedPrefix(), func(file string) string {
		key := dir + "/" + file
		u, err := r.sink.URL(ctx, key, r.cfg.URLExpiry)
		if err != nil {
			uerr = err
		}
		if u != "" {
			return u
		}
		return r.signedPath(MediaPrefix+key, exp)[len(MediaPrefix+dir+"/"):]
	})
	if uerr != nil {
		http.Error(w, "recording sink: "+uerr.Error(), http.StatusBadGateway)
		return
	}
	w.Header().Set("Content-Type", contentTypePlaylist)
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(pl)
}

func (r *Recorder) serveObject(ctx context.Context, w http.ResponseWriter, req *http.Request, key, ct, cc string) {
	rc, err := r.sink.Get(ctx, key)
	if errors.Is(err, os.ErrNotExist) {
		http.NotFound(w, req)
		return
	}
	if err != nil {
		http.Error(w, "recording sink: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Cache-Control", cc)
	if rs, ok := rc.(io.ReadSeeker); ok {
		http.ServeContent(w, req, "", time.Time{}, rs)
		return
	}
	io.Copy(w, rc)
}
