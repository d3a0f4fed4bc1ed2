package lms

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/livefuse/livefuse/authkey"
	"github.com/livefuse/livefuse/av"
	"github.com/livefuse/livefuse/lms/api"
)

// FLVSignal decodes an FLV script-data body: whether it is an encryption
// signal (onEncryption) and, when it is, whether it announces encrypted
// packets. The encryption package owns the format (lms imports no media
// package); the node wiring passes its parser.
type FLVSignal func(data []byte) (signal, encrypted bool, err error)

// PlanProbe is the half of PlanMedia that verifies plans at the media
// listeners of every unit (Units, Serving, OutputsClear), reached at the
// addresses the units report in the node registry and asked as a player
// would, with a signed URL when the stream has a play key. The node
// wiring adds the CDN mixer's half.
type PlanProbe struct {
	reg    *Registry
	st     *Store
	scheme string // of the media listeners: http, or https when this node's is
	client *http.Client
	signal FLVSignal
}

// NewPlanProbe returns a probe of the units registered in st; tls when
// the media listeners serve HTTPS.
func NewPlanProbe(reg *Registry, st *Store, tls bool, signal FLVSignal) *PlanProbe {
	scheme := "http"
	if tls {
		scheme = "https"
	}
	return &PlanProbe{reg: reg, st: st, scheme: scheme, signal: signal, client: &http.Client{
		Timeout:       3 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// unitNode is one unit's media listener.
type unitNode struct{ unit, addr string }

// units returns the media listener of every unit in the node registry.
func (p *PlanProbe) units(ctx context.Context) ([]unitNode, error) {
	nodes, err := ListNodes(ctx, p.st)
	if err != nil {
		return nil, err
	}
	var out []unitNode
	for _, n := range nodes {
		if n.Unit == "" || n.Addrs["http"] == "" || n.State == api.NodeDrained {
			continue
		}
		out = append(out, unitNode{unit: n.Unit, addr: n.Addrs["http"]})
	}
	if len(out) == 0 {
		return nil, errors.New("no unit in the node registry has a media listener")
	}
	return out, nil
}

// Units returns the units with a media listener in the node registry.
func (p *PlanProbe) Units(ctx context.Context) ([]string, error) {
	nodes, err := p.units(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range nodes {
		if !slices.Contains(out, n.unit) {
			out = append(out, n.unit)
		}
	}
	slices.Sort(out)
	return out, nil
}

// get asks the media listener at addr for path (a play path of app/name,
// signed with the stream's play key when it has one); the caller closes
// the body.
func (p *PlanProbe) get(ctx context.Context, addr, app, name, path, signURI string) (*http.Response, error) {
	u := url.URL{Scheme: p.scheme, Host: addr, Path: path}
	if s, ok := p.reg.Get(app, name); ok && s.PlayKey != "" {
		u.RawQuery = "auth_key=" + url.QueryEscape(authkey.Sign(signURI, s.PlayKey, time.Now().Add(time.Minute), "0", "plan"))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "livefuse-plan-verifier")
	return p.client.Do(req)
}

// Serving asks every unit for the stream's HTTP-FLV: 200 is served, 503
// refused; a unit where the stream is not live is left out.
func (p *PlanProbe) Serving(ctx context.Context, app, name string) (map[string]bool, error) {
	nodes, err := p.units(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	var errs []error
	path := "/" + app + "/" + name + ".flv"
	for _, n := range nodes {
		rctx, cancel := context.WithCancel(ctx)
		resp, err := p.get(rctx, n.addr, app, name, path, path)
		if err != nil {
			cancel()
			errs = append(errs, fmt.Errorf("unit %s: %w", n.unit, err))
			continue
		}
		resp.Body.Close()
		cancel()
		switch resp.StatusCode {
		case http.StatusOK:
			out[n.unit] = true
		case http.StatusServiceUnavailable:
			if _, seen := out[n.unit]; !seen {
				out[n.unit] = false
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no unit answers for %s/%s: %w", app, name, errors.Join(errs...))
	}
	return out, nil
}

// OutputsClear checks the stream at every unit that has it live: the
// media playlist's newest segments are under no key (no EXT-X-KEY, or
// METHOD=NONE), and the HTTP-FLV output announces clear packets before
// its first video frame.
func (p *PlanProbe) OutputsClear(ctx context.Context, app, name string) error {
	nodes, err := p.units(ctx)
	if err != nil {
		return err
	}
	checked := 0
	for _, n := range nodes {
		live, err := p.playlistClear(ctx, n.addr, app, name)
		if err != nil {
			return fmt.Errorf("unit %s: HLS: %w", n.unit, err)
		}
		if !live {
			continue
		}
		checked++
		if err := p.flvClear(ctx, n.addr, app, name); err != nil {
			return fmt.Errorf("unit %s: HTTP-FLV: %w", n.unit, err)
		}
	}
	if checked == 0 {
		return fmt.Errorf("%s/%s is not live at any unit", app, name)
	}
	return nil
}

// maxPlaylist bounds a playlist read by the verifier.
const maxPlaylist = 1 << 20

// playlistClear fetches the stream's playlist (its first variant's, for a
// multivariant playlist); live is false when the unit does not have it.
func (p *PlanProbe) playlistClear(ctx context.Context, addr, app, name string) (live bool, err error) {
	base := "/" + app + "/" + name + "/"
	signURI := base + "index.m3u8"
	path := signURI
	for range 2 {
		resp, err := p.get(ctx, addr, app, name, path, signURI)
		if err != nil {
			return false, err
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxPlaylist))
		resp.Body.Close()
		if err != nil {
			return false, err
		}
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusServiceUnavailable {
			return false, nil
		}
		if resp.StatusCode != http.StatusOK {
			return false, fmt.Errorf("%s: status %d", path, resp.StatusCode)
		}
		body := string(b)
		if variant, ok := firstVariant(body); ok {
			variant, _, _ = strings.Cut(variant, "?") // signed again by get
			path = base + strings.TrimPrefix(variant, "./")
			continue
		}
		method, segs := lastKeyMethod(body)
		if segs == 0 {
			return true, errors.New("no segment yet")
		}
		if method != "NONE" {
			return true, fmt.Errorf("newest segments under METHOD=%s", method)
		}
		return true, nil
	}
	return false, errors.New("nested multivariant playlists")
}

// firstVariant returns the first variant URI of a multivariant playlist
// (a relative path; anything else is refused).
func firstVariant(body string) (string, bool) {
	if !strings.Contains(body, "#EXT-X-STREAM-INF") {
		return "", false
	}
	for _, l := range strings.Split(body, "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") && !strings.Contains(l, "://") && !strings.HasPrefix(l, "/") && !strings.Contains(l, "..") {
			return l, true
		}
	}
	return "", false
}

// lastKeyMethod returns the key method in force for the playlist's last
// segment ("NONE" without a key) and the number of segments.
func lastKeyMethod(body string) (method string, segs int) {
	method = "NONE"
	cur := "NONE"
	for _, l := range strings.Split(body, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "#EXT-X-KEY:"):
			cur = "NONE"
			if i := strings.Index(l, "METHOD="); i >= 0 {
				cur, _, _ = strings.Cut(l[i+len("METHOD="):], ",")
			}
		case l != "" && !strings.HasPrefix(l, "#"):
			segs++
			method = cur
		}
	}
	return method, segs
}

// flvClear reads the stream's HTTP-FLV up to its first video frame (at
// most 8 MiB or 3 s) and checks the last onEncryption tag before it says
// clear (no tag at all: a clear output).
func (p *PlanProbe) flvClear(ctx context.Context, addr, app, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	path := "/" + app + "/" + name + ".flv"
	resp, err := p.get(ctx, addr, app, name, path, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	r, err := av.NewFLVReader(bufio.NewReader(io.LimitReader(resp.Body, 8<<20)))
	if err != nil {
		return err
	}
	encrypted := false
	for {
		pk, err := r.ReadPacket()
		if err != nil {
			if r.Err() != nil {
				return fmt.Errorf("no video frame read: %w", err)
			}
			continue
		}
		switch {
		case pk.Kind == av.KindData:
			signal, enc, err := p.signal(pk.Data)
			if err != nil {
				return err
			}
			if signal {
				encrypted = enc
			}
		case pk.Kind == av.KindVideo && !pk.Header:
			if encrypted {
				return errors.New("video frames announced as encrypted")
			}
			return nil
		}
	}
}

// Refusal is why unit refuses the players of s: another unit serves them
// (serve_unit, set by the move_unit plan); "" when it serves them.
func Refusal(s Stream, unit string) string {
	if s.ServeUnit == "" || s.ServeUnit == unit {
		return ""
	}
	return "unit " + s.ServeUnit + " serves " + s.App + "/" + s.Name
}
