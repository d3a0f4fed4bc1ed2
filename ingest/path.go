package ingest

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/livefuse/livefuse/av"
)

// DefaultApp is the app used when a URL names only the stream.
const DefaultApp = "live"

// ParseStreamPath splits "app/name?query" (a leading '/' allowed) into its
// parts. A path with only a name uses DefaultApp.
func ParseStreamPath(p string) (app, name string, q url.Values, err error) {
	raw := ""
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p, raw = p[:i], p[i+1:]
	}
	q, err = url.ParseQuery(raw)
	if err != nil {
		return "", "", nil, fmt.Errorf("stream path query: %w", err)
	}
	p = strings.TrimPrefix(p, "/")
	parts := strings.Split(p, "/")
	switch len(parts) {
	case 1:
		app, name = DefaultApp, parts[0]
	case 2:
		app, name = parts[0], parts[1]
	default:
		return "", "", nil, fmt.Errorf("stream path %q: want app/name", p)
	}
	if !av.ValidName(app) || !av.ValidName(name) {
		return "", "", nil, fmt.Errorf("stream path %q: invalid app or name", p)
	}
	return app, name, q, nil
}

// FeedFromQuery returns the feed named by ?feed= ("main" when absent).
func FeedFromQuery(q url.Values) (string, error) {
	switch f := q.Get("feed"); f {
	case "", "main":
		return "main", nil
	case "backup":
		return "backup", nil
	default:
		return "", fmt.Errorf("unknown feed %q (want main or backup)", f)
	}
}
