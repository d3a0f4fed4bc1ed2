package cdnmix

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// HLS Content Steering (RFC 8216bis §4.4.6.6, hls.js ≥ 1.4), next to the
// 302 and JSON dispatch:
//
//	GET {prefix}{app}/{name}/steered.m3u8   the stream's multivariant playlist with one
//	                                        pathway per live vendor of the client's bucket
//	GET {prefix}{app}/{name}/steering.json  the steering manifest: the pathways in the
//	                                        order the mixer's current plan gives the client
//
// The playlist is the origin's own (read in process, with the client's
// query, so play authorization applies as on the origin; a media
// playlist, as MPEG-TS HLS serves at index.m3u8, becomes one variant): each
// EXT-X-STREAM-INF (and EXT-X-MEDIA group) is repeated per vendor with
// PATHWAY-ID set to the vendor's name and the URI on the vendor (signed as
// the vendor's signing says). EXT-X-CONTENT-STEERING names the manifest
// and the pathway dispatch picked by ratio for this start. The player
// reloads the manifest every TTL (DispatcherConfig.SteeringTTL) and moves
// to the first pathway of PATHWAY-PRIORITY: a plan change (a vendor
// excluded, a blacklist, new ratios) reaches players within about one TTL
// plus the allocation period. The manifest's order is the chosen vendor
// first (a weighted pick over the plan's ratios, so the split holds over
// many players) or, on a reload, the pathway the player is on
// (_HLS_pathway) while the plan still gives it a share; then the bucket's
// other live vendors by score.

// maxSteeredPlaylist bounds the origin playlist read for a steered one.
const maxSteeredPlaylist = 64 << 10

// mediaOnlyBandwidth is the BANDWIDTH of the one variant of a stream
// whose origin playlist is a media playlist.
const mediaOnlyBandwidth = 3_000_000

// steeringTimeout bounds the in-process read of the origin playlist.
const steeringTimeout = 5 * time.Second

// capWriter is a bounded in-process http.ResponseWriter.
type capWriter struct {
	h    http.Header
	code int
	buf  bytes.Buffer
	over bool
}

func (c *capWriter) Header() http.Header { return c.h }
func (c *capWriter) WriteHeader(code int) {
	if c.code == 0 {
		c.code = code
	}
}
func (c *capWriter) Write(b []byte) (int, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	if c.buf.Len()+len(b) > maxSteeredPlaylist {
		c.over = true
		return len(b), nil
	}
	return c.buf.Write(b)
}

// serveSteering answers the two steering paths; false when p is neither.
func (d *Dispatcher) serveSteering(w http.ResponseWriter, r *http.Request, p string) bool {
	var steered bool
	switch {
	case strings.HasSuffix(p, "/steered.m3u8"):
		steered = true
	case strings.HasSuffix(p, "/steering.json"):
	default:
		return false
	}
	app, rest, _ := strings.Cut(p, "/")
	name, _, _ := strings.Cut(rest, "/")
	if !validName(app) || !validName(name) || strings.Count(p, "/") != 2 ||
		d.cfg.StreamExists != nil && !d.cfg.StreamExists(app, name) {
		d.notFound.Add(1)
		http.NotFound(w, r)
		return true
	}
	bp := d.cfg.Allocator.Plan().Lookup(d.bucketOf(r))
	cur := ""
	if !steered {
		cur = r.URL.Query().Get("_HLS_pathway") // the pathway the player is on
	}
	order := d.pathways(bp, cur)
	if len(order) == 0 {
		d.unavailable.Add(1)
		w.Header()["Retry-After"] = []string{"5"}
		http.Error(w, "no CDN vendor available", http.StatusServiceUnavailable)
		return true
	}
	h := w.Header()
	h["Cache-Control"] = d.hdrNoStore
	if !steered {
		// Pathway IDs are vendor names: [A-Za-z0-9._-], nothing to escape.
		b := []byte(`{"VERSION":1,"TTL":`)
		b = strconv.AppendInt(b, int64(max(d.cfg.SteeringTTL/time.Second, 1)), 10)
		b = append(b, `,"PATHWAY-PRIORITY":[`...)
		for i, c := range order {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '"')
			b = append(b, c.Vendor...)
			b = append(b, '"')
		}
		b = append(b, "]}\n"...)
		h["Content-Type"] = d.hdrJSON
		w.WriteHeader(http.StatusOK)
		w.Write(b)
		return true
	}
	if d.media == nil {
		http.Error(w, "no origin playlist here", http.StatusNotFound)
		return true
	}
	ctx, cancel := context.WithTimeout(r.Context(), steeringTimeout)
	defer cancel()
	in := r.Clone(ctx)
	in.Method = http.MethodGet
	in.URL = &url.URL{Path: "/" + app + "/" + name + "/index.m3u8", RawQuery: r.URL.RawQuery}
	in.RequestURI = in.URL.RequestURI()
	in.Header = http.Header{}
	cw := &capWriter{h: http.Header{}}
	d.media.ServeHTTP(cw, in)
	if cw.code != http.StatusOK || cw.over {
		code := cw.code
		if code == http.StatusOK || code == 0 {
			code = http.StatusBadGateway
		}
		http.Error(w, "origin playlist: "+http.StatusText(code), code)
		return true
	}
	plan := d.cfg.Allocator.Plan()
	exp := d.cfg.Now().Add(d.cfg.SignTTL)
	vendors := make([]*compiledVendor, 0, len(order))
	for _, c := range order {
		vendors = append(vendors, plan.vendors.list[c.index])
	}
	out, ok := steerPlaylist(cw.buf.String(), app, name, vendors, exp, "steering.json")
	if !ok {
		http.Error(w, "origin playlist is not a multivariant playlist", http.StatusBadGateway)
		return true
	}
	d.dispatched.Add(1)
	h["Content-Type"] = []string{"application/vnd.apple.mpegurl"}
	w.WriteHeader(http.StatusOK)
	w.Write([]byte(out))
	return true
}

// bucketOf locates the client of r (the any-bucket when unknown).
func (d *Dispatcher) bucketOf(r *http.Request) Bucket {
	if d.cfg.Locator != nil {
		if client := d.clientAddr(r); client.IsValid() {
			if loc, ok := d.cfg.Locator.Locate(client); ok {
				return Bucket{loc.Region, loc.ISP}
			}
		}
	}
	return Bucket{}
}

// pathways orders the bucket's live vendors: the player's current one
// first while the plan still gives it a share (so a player is not moved
// at every reload), else one picked by the plan's ratios; then the others
// by score.
func (d *Dispatcher) pathways(bp *BucketPlan, cur string) []Candidate {
	if bp == nil {
		return nil
	}
	live := bp.Live()
	chosen := -1
	for _, c := range live {
		if cur != "" && c.Vendor == cur && c.Ratio > 0 {
			chosen = c.index
		}
	}
	if chosen < 0 {
		if chosen = bp.pick(1); chosen < 0 {
			return nil
		}
	}
	order := make([]Candidate, 0, len(live))
	for _, c := range live {
		if c.index == chosen {
			order = append(order, c)
		}
	}
	for _, c := range live {
		if c.index != chosen {
			order = append(order, c)
		}
	}
	return order
}

// steerPlaylist rewrites a multivariant playlist for content steering:
// EXT-X-CONTENT-STEERING (manifest at serverURI, vendors[0] first), and
// every variant and rendition group once per vendor, on that vendor.
func steerPlaylist(src, app, name string, vendors []*compiledVendor, exp time.Time, serverURI string) (string, bool) {
	lines := strings.Split(strings.ReplaceAll(src, "\r\n", "\n"), "\n")
	if len(lines) == 0 || strings.TrimSpace(lines[0]) != "#EXTM3U" {
		return "", false
	}
	var head, media []string // tags before the variants; EXT-X-MEDIA lines
	type variant struct{ inf, uri string }
	var vars []variant
	if strings.Contains(src, "\n#EXTINF:") || strings.Contains(src, "\n#EXT-X-TARGETDURATION:") {
		// The origin's index.m3u8 is itself the media playlist (MPEG-TS
		// HLS): one variant per pathway. BANDWIDTH is required but says
		// nothing here (one level: nothing to choose between).
		lines, vars = nil, []variant{{"#EXT-X-STREAM-INF:BANDWIDTH=" + strconv.Itoa(mediaOnlyBandwidth), "index.m3u8"}}
	}
	for i := 1; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		switch {
		case l == "":
		case strings.HasPrefix(l, "#EXT-X-STREAM-INF:"):
			for i+1 < len(lines) && (strings.TrimSpace(lines[i+1]) == "" || strings.HasPrefix(lines[i+1], "#")) {
				i++ // a URI line follows, after blank lines or comments
			}
			if i+1 >= len(lines) {
				return "", false
			}
			i++
			vars = append(vars, variant{l, strings.TrimSpace(lines[i])})
		case strings.HasPrefix(l, "#EXT-X-MEDIA:"):
			media = append(media, l)
		case strings.HasPrefix(l, "#EXT-X-CONTENT-STEERING"), strings.HasPrefix(l, "#EXT-X-I-FRAME-STREAM-INF"):
		case strings.HasPrefix(l, "#"):
			head = append(head, l)
		default:
			return "", false // a URI without EXT-X-STREAM-INF: a media playlist
		}
	}
	if len(vars) == 0 {
		return "", false
	}
	base := "/" + app + "/" + name + "/"
	on := func(v *compiledVendor, uri string) (string, bool) {
		u, err := url.Parse(uri)
		if err != nil || u.IsAbs() || u.Host != "" || strings.HasPrefix(u.Path, "/") || strings.Contains(u.Path, "..") {
			return "", false
		}
		raw := v.hlsPrefix + base + u.Path
		if v.Signing == SchemeAuthKey || v.Signing == SchemeHMAC {
			return SignURL(v.Signing, v.Key, raw, exp, strconv.FormatUint(uint64(exp.UnixNano()), 36)), true
		}
		return raw, true
	}
	var b strings.Builder
	b.WriteString("#EXTM3U\n")
	for _, l := range head {
		b.WriteString(l + "\n")
	}
	b.WriteString(`#EXT-X-CONTENT-STEERING:SERVER-URI="` + serverURI + `",PATHWAY-ID="` + vendors[0].Name + "\"\n")
	for _, v := range vendors {
		for _, m := range media {
			m = setAttr(m, "GROUP-ID", attr(m, "GROUP-ID")+"-"+v.Name)
			if u := attr(m, "URI"); u != "" {
				nu, ok := on(v, u)
				if !ok {
					return "", false
				}
				m = setAttr(m, "URI", nu)
			}
			b.WriteString(m + "\n")
		}
		for _, vr := range vars {
			inf := vr.inf
			for _, g := range []string{"AUDIO", "VIDEO", "SUBTITLES"} {
				if a := attr(inf, g); a != "" {
					inf = setAttr(inf, g, a+"-"+v.Name)
				}
			}
			inf = setAttr(inf, "PATHWAY-ID", v.Name)
			nu, ok := on(v, vr.uri)
			if !ok {
				return "", false
			}
			b.WriteString(inf + "\n" + nu + "\n")
		}
	}
	return b.String(), true
}

// attr returns the quoted attribute k of a tag line ("" when absent).
func attr(line, k string) string {
	i := attrIndex(line, k)
	if i < 0 {
		return ""
	}
	v := line[i+len(k)+1:]
	if strings.HasPrefix(v, `"`) {
		v, _, _ = strings.Cut(v[1:], `"`)
		return v
	}
	v, _, _ = strings.Cut(v, ",")
	return v
}

// setAttr sets attribute k of a tag line to the quoted value v.
func setAttr(line, k, v string) string {
	i := attrIndex(line, k)
	if i < 0 {
		return line + "," + k + `="` + v + `"`
	}
	rest := line[i+len(k)+1:]
	end := 0
	if strings.HasPrefix(rest, `"`) {
		if j := strings.IndexByte(rest[1:], '"'); j >= 0 {
			end = j + 2
		} else {
			end = len(rest)
		}
	} else if j := strings.IndexByte(rest, ','); j >= 0 {
		end = j
	} else {
		end = len(rest)
	}
	return line[:i] + k + `="` + v + `"` + rest[end:]
}

// attrIndex finds "K=" at an attribute boundary of line (after ':' or ',',
// outside quotes).
func attrIndex(line, k string) int {
	start := strings.IndexByte(line, ':')
	if start < 0 {
		return -1
	}
	inQ := false
	for i := start; i < len(line); i++ {
		switch c := line[i]; {
		case c == '"':
			inQ = !inQ
		case !inQ && (c == ':' || c == ',') && strings.HasPrefix(line[i+1:], k+"="):
			return i + 1
		}
	}
	return -1
}
