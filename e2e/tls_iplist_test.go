package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/yutopp/go-rtmp"
	rtmpmsg "github.com/yutopp/go-rtmp/message"
)

// The TLS and IP-list tests run the real binary with HTTPS on the media
// listener and the control API, RTMPS ingest, and IP lists per listener
// and per stream. Certificates come from a CA made in the test; a second
// loopback address (127.0.0.2) is the refused client.

// testCA is a certificate authority made for one test.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	pemFile string
	serial  int64
	leaves  []string // base64 SHA-256 of the SPKI of every leaf issued
}

func newTestCA(t *testing.T, dir string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "livefuse e2e test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, pemFile: filepath.Join(dir, "ca.pem"), serial: 100}
	if err := os.WriteFile(ca.pemFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return ca
}

// issue writes a leaf certificate for 127.0.0.1 and localhost, signed by
// the CA, and its key; it returns the serial number.
func (ca *testCA) issue(t *testing.T, certFile, keyFile string) int64 {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial),
		Subject:      pkix.Name{CommonName: fmt.Sprintf("livefuse e2e %d", ca.serial)},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	ca.leaves = append(ca.leaves, base64.StdEncoding.EncodeToString(sum[:]))
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	// Write to temporary names and rename, as certbot and cert-manager do.
	for _, f := range []struct {
		path string
		pem  []byte
	}{
		{keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})},
		{certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})},
	} {
		if err := os.WriteFile(f.path+".tmp", f.pem, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(f.path+".tmp", f.path); err != nil {
			t.Fatal(err)
		}
	}
	return ca.serial
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// spki lists the base64 SHA-256 of the public keys of the CA and of the
// leaves it issued, for Chromium's --ignore-certificate-errors-spki-list
// (the way to trust test certificates without touching the system store).
func (ca *testCA) spki() string {
	sum := sha256.Sum256(ca.cert.RawSubjectPublicKeyInfo)
	return strings.Join(append([]string{base64.StdEncoding.EncodeToString(sum[:])}, ca.leaves...), ",")
}

// client returns an HTTP client that trusts only the CA, dials from
// source (nil: any) and offers HTTP/2.
func (ca *testCA) client(source net.IP) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if source != nil {
		d.LocalAddr = &net.TCPAddr{IP: source}
	}
	tr := &http.Transport{DialContext: d.DialContext, ForceAttemptHTTP2: true}
	if ca != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: ca.pool()}
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// guardedServer is a livefuse started with its own sections (TLS, lists).
type guardedServer struct {
	*server
	scheme     string // of the media listener and the API
	rtmps      int
	certFile   string
	keyFile    string
	ca         *testCA
	httpClient *http.Client
}

// guardedOpts are the extra keys of each section.
type guardedOpts struct {
	tls                   bool
	rtmp, rtsp, http, api string // extra flow-map entries: `access: {...}`
	extra                 string // appended YAML (streams...)
}

// startGuarded starts livefuse on fresh ports with opts; with tls, the
// media listener, the control API and RTMPS use a certificate of a CA
// made here.
func startGuarded(t *testing.T, o guardedOpts) *guardedServer {
	t.Helper()
	s := &server{t: t, dir: t.TempDir(), token: apiToken}
	s.rtmp, s.rtsp, s.http, s.apiPort = freePort(t), freePort(t), freePort(t), freePort(t)
	g := &guardedServer{server: s, scheme: "http", rtmps: freePort(t)}
	udp := freeUDPPair(t)
	join := func(parts ...string) string {
		var out []string
		for _, p := range parts {
			if p != "" {
				out = append(out, p)
			}
		}
		return strings.Join(out, ", ")
	}
	var httpTLS, apiTLS, rtmps string
	if o.tls {
		g.scheme = "https"
		g.ca = newTestCA(t, s.dir)
		g.certFile, g.keyFile = filepath.Join(s.dir, "cert.pem"), filepath.Join(s.dir, "key.pem")
		g.ca.issue(t, g.certFile, g.keyFile)
		tlsMap := fmt.Sprintf("tls: {cert_file: %q, key_file: %q}", g.certFile, g.keyFile)
		httpTLS, apiTLS = tlsMap, "api: {"+tlsMap+"}"
		rtmps = fmt.Sprintf("rtmps: {addr: \"127.0.0.1:%d\", cert_file: %q, key_file: %q}\n", g.rtmps, g.certFile, g.keyFile)
	}
	cfg := fmt.Sprintf(`data_dir: %s
log_level: debug
rtmp: {%s}
rtsp: {%s}
http: {%s}
lms: {%s}
%s`, filepath.Join(s.dir, "data"),
		join(fmt.Sprintf(`addr: "127.0.0.1:%d"`, s.rtmp), o.rtmp),
		join(fmt.Sprintf(`addr: "127.0.0.1:%d", udp_rtp_addr: "127.0.0.1:%d", udp_rtcp_addr: "127.0.0.1:%d"`, s.rtsp, udp, udp+1), o.rtsp),
		join(fmt.Sprintf(`addr: "127.0.0.1:%d", public_host: "127.0.0.1"`, s.http), httpTLS, o.http),
		join(fmt.Sprintf(`api_addr: "127.0.0.1:%d", api_token: %q`, s.apiPort, apiToken), apiTLS, o.api),
		rtmps)
	cfg += o.extra
	s.cfgPath = filepath.Join(s.dir, "livefuse.yaml")
	if err := os.WriteFile(s.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	g.httpClient = g.ca.client(nil) // plain HTTP without a CA
	g.start()
	t.Cleanup(s.stop)
	return g
}

// start runs the binary and waits for /readyz over the API's scheme.
func (g *guardedServer) start() {
	g.server.readyGet = func(url string) (*http.Response, error) {
		return g.httpClient.Get(g.scheme + strings.TrimPrefix(url, "http"))
	}
	g.server.start()
}

func (g *guardedServer) mediaURL(path string) string {
	return fmt.Sprintf("%s://127.0.0.1:%d%s", g.scheme, g.http, path)
}

// apiDo calls the control API over its scheme.
func (g *guardedServer) apiDo(method, path string, body, out any) int {
	g.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, fmt.Sprintf("%s://127.0.0.1:%d/api/v1%s", g.scheme, g.apiPort, path), rd)
	req.Header.Set("Authorization", "Bearer "+g.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := g.httpClient.Do(req)
	if err != nil {
		g.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			g.t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
	return resp.StatusCode
}

// peerSerial returns the serial of the certificate served on addr.
func peerSerial(t *testing.T, ca *testCA, addr string) int64 {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: ca.pool(), ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("tls dial %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// decodedFrames decodes input with ffmpeg (trusting the CA, verifying the
// certificate) and returns the number of video and audio frames.
func decodedFrames(t *testing.T, ca *testCA, timeout time.Duration, input string) (video, audio int, errs string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	args := []string{"-hide_banner", "-nostdin", "-loglevel", "error"}
	if ca != nil {
		args = append(args, "-tls_verify", "1", "-ca_file", ca.pemFile)
	}
	args = append(args, "-t", "4", "-i", input, "-f", "framemd5", "-")
	cmd := exec.CommandContext(ctx, "ffmpeg", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, _ := cmd.Output()
	for _, f := range parseFramemd5(t, out) {
		switch f.stream {
		case 0:
			video++
		case 1:
			audio++
		}
	}
	return video, audio, stderr.String()
}

// TestTLSPlayback: an encoder publishes over RTMPS (ffmpeg rtmps://);
// ffmpeg plays it back over HTTPS as HTTP-FLV and HLS, verifying the
// certificate against the test CA; the control API answers over HTTPS;
// HTTP/2 is used where the client offers it; a certificate replaced on
// disk is served to the next connections without a restart, and playback
// goes on with it.
func TestTLSPlayback(t *testing.T) {
	parallel(t)
	g := startGuarded(t, guardedOpts{tls: true, extra: "streams:\n  - {name: tls, publish_token: pub}\n"})
	push(t, fmt.Sprintf("rtmps://127.0.0.1:%d/live/tls?token=pub", g.rtmps), true)
	flv := g.mediaURL("/live/tls.flv")
	waitLiveWith(t, g.httpClient, flv, 20*time.Second)

	play := func(when string) {
		t.Helper()
		v, a, errs := decodedFrames(t, g.ca, 30*time.Second, flv)
		if v < 50 || a < 50 {
			t.Errorf("%s: HTTP-FLV over HTTPS decoded %d video and %d audio frames in 4 s (%s)", when, v, a, errs)
		}
		v, a, errs = decodedFrames(t, g.ca, 40*time.Second, g.mediaURL("/live/tls/index.m3u8"))
		if v < 50 || a < 50 {
			t.Errorf("%s: HLS over HTTPS decoded %d video and %d audio frames in 4 s (%s)", when, v, a, errs)
		}
	}
	play("first certificate")
	// RTMPS serves players too (the same RTMP server).
	if v, a, errs := decodedFrames(t, g.ca, 30*time.Second, fmt.Sprintf("rtmps://127.0.0.1:%d/live/tls", g.rtmps)); v < 50 || a < 50 {
		t.Errorf("RTMPS play: %d video, %d audio frames (%s)", v, a, errs)
	}
	// The players above verified the certificate: one that trusts only
	// another CA is refused.
	other := newTestCA(t, t.TempDir())
	if v, _, errs := decodedFrames(t, other, 20*time.Second, flv); v > 0 || errs == "" {
		t.Errorf("ffmpeg trusting another CA decoded %d frames (%q): is the certificate checked?", v, errs)
	}

	// HTTP/2 where offered, on both listeners.
	resp, err := g.httpClient.Get(g.mediaURL("/live/tls/index.m3u8"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Proto != "HTTP/2.0" || resp.StatusCode != 200 {
		t.Errorf("media listener: %s %d, want HTTP/2.0 200", resp.Proto, resp.StatusCode)
	}
	// HTTP-FLV over HTTP/2 (no connection to take over: chunked through
	// the stream) delivers the FLV.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	req, _ := http.NewRequestWithContext(ctx, "GET", flv, nil)
	if resp, err := g.httpClient.Do(req); err != nil {
		t.Errorf("HTTP-FLV over HTTP/2: %v", err)
	} else {
		b := make([]byte, 256<<10)
		n, err := io.ReadFull(resp.Body, b)
		resp.Body.Close()
		if resp.Proto != "HTTP/2.0" || n < len(b) || !bytes.HasPrefix(b, []byte("FLV")) {
			t.Errorf("HTTP-FLV over %s: read %d bytes (%v), FLV header %v", resp.Proto, n, err, bytes.HasPrefix(b, []byte("FLV")))
		}
	}
	cancel()
	var list struct {
		Streams []struct {
			App, Name string
		} `json:"streams"`
	}
	if code := g.apiDo("GET", "/streams", nil, &list); code != 200 || len(list.Streams) == 0 {
		t.Errorf("API over HTTPS: %d, %d streams", code, len(list.Streams))
	}
	// Plain HTTP on the HTTPS API is not served.
	if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/v1/streams", g.apiPort)); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("API answered 200 over plain HTTP")
		}
	}

	// Renewal: a new certificate replaces the files; the media listener,
	// the API and RTMPS serve it within a few seconds, no restart.
	old := peerSerial(t, g.ca, fmt.Sprintf("127.0.0.1:%d", g.http))
	serial := g.ca.issue(t, g.certFile, g.keyFile)
	if serial == old {
		t.Fatal("same serial")
	}
	for _, l := range []struct {
		name string
		port int
	}{{"http", g.http}, {"api", g.apiPort}, {"rtmps", g.rtmps}} {
		deadline := time.Now().Add(15 * time.Second)
		got := peerSerial(t, g.ca, fmt.Sprintf("127.0.0.1:%d", l.port))
		for got != serial && time.Now().Before(deadline) {
			time.Sleep(250 * time.Millisecond)
			got = peerSerial(t, g.ca, fmt.Sprintf("127.0.0.1:%d", l.port))
		}
		if got != serial {
			t.Errorf("%s: still serving serial %d after the renewal, want %d", l.name, got, serial)
		}
	}
	if !strings.Contains(g.logs(), "tls: certificate reloaded") {
		t.Error("no reload logged")
	}
	select {
	case <-g.exited:
		t.Fatal("livefuse exited")
	default:
	}
	play("renewed certificate")
}

// TestTLSBrowserHLS: hls.js in Chromium plays the HLS of an RTMPS-published
// stream from the HTTPS media listener (the page and the playlist come
// over TLS; Chromium trusts the test CA by its key).
func TestTLSBrowserHLS(t *testing.T) {
	web := needBrowser(t)
	g := startGuarded(t, guardedOpts{tls: true, extra: "streams:\n  - {name: tlsweb, publish_token: pub}\n"})
	push(t, fmt.Sprintf("rtmps://127.0.0.1:%d/live/tlsweb?token=pub", g.rtmps), true)
	src := g.mediaURL("/live/tlsweb/index.m3u8")
	waitLiveWith(t, g.httpClient, src, 20*time.Second)
	t.Setenv("CHROMIUM_EXTRA_ARGS", "--ignore-certificate-errors-spki-list="+g.ca.spki())
	page := g.mediaURL("/player/?src=" + url.QueryEscape(src))
	rep := browserPlay(t, web, page, 8)
	if !rep.OK || rep.Advanced < 5 {
		t.Fatalf("hls.js over HTTPS: ok=%v advanced %.1f s, errors %v, events %v", rep.OK, rep.Advanced, rep.Errors, rep.Events)
	}
}

var (
	allowedIP = net.IPv4(127, 0, 0, 1)
	deniedIP  = net.IPv4(127, 0, 0, 2)
)

// needLoopback2 skips nothing: 127.0.0.0/8 is all loopback on Linux; it
// fails clearly where 127.0.0.2 cannot be bound.
func needLoopback2(t *testing.T) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatalf("127.0.0.2 not usable as a source address: %v", err)
	}
	l.Close()
}

// rtmpTry connects from source to the RTMP server and publishes or plays
// stream ("cam?token=pub"); it reports whether the server closed the
// connection within 3 s (what a refusal does).
func rtmpTry(t *testing.T, source net.IP, port int, publish bool, stream string) (closed bool) {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: source}}
	cc, err := rtmp.DialWithDialer(d, "rtmp", fmt.Sprintf("127.0.0.1:%d", port), &rtmp.ConnConfig{Logger: quietLogrus()})
	if err != nil {
		t.Fatalf("rtmp dial from %v: %v", source, err)
	}
	defer cc.Close()
	if err := cc.Connect(&rtmpmsg.NetConnectionConnect{Command: rtmpmsg.NetConnectionConnectCommand{App: "live", TCURL: fmt.Sprintf("rtmp://127.0.0.1:%d/live", port)}}); err != nil {
		t.Fatalf("rtmp connect from %v: %v", source, err)
	}
	st, err := cc.CreateStream(&rtmpmsg.NetConnectionCreateStream{}, 4096)
	if err != nil {
		t.Fatalf("rtmp createStream from %v: %v", source, err)
	}
	if publish {
		err = st.Publish(&rtmpmsg.NetStreamPublish{PublishingName: stream, PublishingType: "live"})
	} else {
		buf := new(bytes.Buffer)
		enc := rtmpmsg.NewAMFEncoder(buf, rtmpmsg.EncodingTypeAMF0)
		for _, v := range []any{nil, stream, float64(-2)} { // command object, name, start
			if err := enc.Encode(v); err != nil {
				t.Fatal(err)
			}
		}
		err = st.Write(8, 0, &rtmpmsg.CommandMessage{CommandName: "play", Encoding: rtmpmsg.EncodingTypeAMF0, Body: buf})
	}
	if err != nil {
		return true
	}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if cc.LastError() != nil {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

func quietLogrus() *logrus.Logger {
	l := logrus.New()
	l.Out = io.Discard
	return l
}

// rtspAnnounce sends an ANNOUNCE from source and returns the status code.
func rtspAnnounce(t *testing.T, source net.IP, port int, path string) int {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: source}}
	c, err := d.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sdp := "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\na=control:trackID=0\r\n"
	u := fmt.Sprintf("rtsp://127.0.0.1:%d/%s", port, path)
	fmt.Fprintf(c, "ANNOUNCE %s RTSP/1.0\r\nCSeq: 1\r\nContent-Type: application/sdp\r\nContent-Length: %d\r\n\r\n%s", u, len(sdp), sdp)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 512)
	n, _ := c.Read(b)
	var proto string
	var code int
	fmt.Sscan(string(b[:n]), &proto, &code)
	return code
}

// httpStatus GETs u from source and returns the status and body start.
func httpStatus(t *testing.T, source net.IP, u string) (int, string) {
	t.Helper()
	c := (*testCA)(nil).client(source)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s from %v: %v", u, source, err)
	}
	defer resp.Body.Close()
	b := make([]byte, 200)
	n, _ := io.ReadFull(resp.Body, b)
	return resp.StatusCode, string(b[:n])
}

// logHas waits up to 5 s for a log line containing every part.
func logHas(s *server, parts ...string) bool { return logWithin(s, 5*time.Second, parts...) }

// logWithin waits up to within for a log line containing every part.
func logWithin(s *server, within time.Duration, parts ...string) bool {
	deadline := time.Now().Add(within)
	for {
		for _, line := range strings.Split(s.logs(), "\n") {
			ok := true
			for _, p := range parts {
				if !strings.Contains(line, p) {
					ok = false
					break
				}
			}
			if ok {
				return true
			}
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestIPListsListener: the lists of the RTMP, RTSP and media listeners
// refuse 127.0.0.2 (RTMP publish and play closed with the reason logged,
// RTSP 403, HTTP-FLV and HLS 403 with a reason) and serve 127.0.0.1.
func TestIPListsListener(t *testing.T) {
	parallel(t)
	needLoopback2(t)
	g := startGuarded(t, guardedOpts{
		rtmp:  `access: {publish_deny: ["127.0.0.2"], play_deny: ["127.0.0.2/32"]}`,
		rtsp:  `access: {publish_allow: ["127.0.0.1"]}`,
		http:  `access: {play_deny: ["127.0.0.2"]}`,
		extra: "streams:\n  - {name: cam, publish_token: pub}\n",
	})
	// Refused before the token is looked at, with the reason in the log.
	if !rtmpTry(t, deniedIP, g.rtmp, true, "cam?token=pub") {
		t.Error("RTMP publish from 127.0.0.2: connection not closed")
	}
	if !logHas(g.server, "rtmp publish refused", "127.0.0.2", "listener rtmp publish deny list") {
		t.Errorf("no refusal logged for the RTMP publisher from 127.0.0.2:\n%s", g.tail(30))
	}
	if code := rtspAnnounce(t, deniedIP, g.rtsp, "live/cam?token=pub"); code != 403 {
		t.Errorf("RTSP ANNOUNCE from 127.0.0.2: %d, want 403", code)
	}
	if !logHas(g.server, "rtsp publish refused", "127.0.0.2", "not on the listener rtsp publish allow list") {
		t.Errorf("no refusal logged for the RTSP publisher from 127.0.0.2")
	}

	// The allowed address publishes (ffmpeg binds 127.0.0.1) and plays.
	push(t, g.rtmpURL("cam", "token=pub"), true)
	waitLive(t, g.flvURL("cam"), 15*time.Second)
	for _, u := range []string{g.flvURL("cam"), g.hlsURL("cam")} {
		waitLiveWith(t, (*testCA)(nil).client(allowedIP), u, 20*time.Second)
		code, body := httpStatus(t, deniedIP, u)
		if code != 403 || !strings.Contains(body, "address not allowed") {
			t.Errorf("GET %s from 127.0.0.2: %d %q, want 403 with a reason", u, code, body)
		}
	}
	if !logHas(g.server, "play refused", "127.0.0.2", "listener http play deny list") {
		t.Error("no refusal logged for the HTTP player from 127.0.0.2")
	}
	if !rtmpTry(t, deniedIP, g.rtmp, false, "cam") {
		t.Error("RTMP play from 127.0.0.2: connection not closed")
	}
	if !logHas(g.server, "rtmp play refused", "127.0.0.2", "listener rtmp play deny list") {
		t.Error("no refusal logged for the RTMP player from 127.0.0.2")
	}
	v, a, errs := decodedFrames(t, nil, 30*time.Second, g.rtmpURL("cam", ""))
	if v < 50 || a < 50 {
		t.Errorf("RTMP play from 127.0.0.1: %d video, %d audio frames (%s)", v, a, errs)
	}
}

// TestIPListsStream: a stream's lists, set at creation and changed by
// PATCH through the control API, apply to the next publisher and player
// without a restart; GET shows them; a bad entry is refused with 400.
func TestIPListsStream(t *testing.T) {
	parallel(t)
	needLoopback2(t)
	g := startGuarded(t, guardedOpts{})
	var st map[string]any
	if code := g.apiDo("POST", "/streams", map[string]any{"name": "guarded", "publish_token": "pub",
		"publish_deny": []string{"127.0.0.2"}, "play_deny": []string{"127.0.0.0/30"}, "play_allow": []string{"127.0.0.0/8"}}, &st); code != 201 {
		t.Fatalf("create: %d %v", code, st)
	}
	if code := g.apiDo("PATCH", "/streams/live/guarded", map[string]any{"play_deny": []string{"nope"}}, nil); code != 400 {
		t.Errorf("PATCH with a bad entry: %d, want 400", code)
	}
	if code := g.apiDo("GET", "/streams/live/guarded", nil, &st); code != 200 || fmt.Sprint(st["publish_deny"]) != "[127.0.0.2]" {
		t.Errorf("GET: %d, publish_deny %v", code, st["publish_deny"])
	}

	// Publish: refused from 127.0.0.2, then allowed after a PATCH.
	if !rtmpTry(t, deniedIP, g.rtmp, true, "guarded?token=pub") {
		t.Error("RTMP publish from 127.0.0.2: connection not closed")
	}
	if !logHas(g.server, "rtmp publish refused", "127.0.0.2", "stream live/guarded publish deny list") {
		t.Errorf("no refusal logged:\n%s", g.tail(30))
	}
	if code := g.apiDo("PATCH", "/streams/live/guarded", map[string]any{"publish_deny": []string{}}, nil); code != 200 {
		t.Fatalf("PATCH publish_deny: %d", code)
	}
	if rtmpTry(t, deniedIP, g.rtmp, true, "guarded?token=pub") {
		t.Errorf("RTMP publish from 127.0.0.2 after the PATCH: closed\n%s", g.tail(30))
	}
	if !logHas(g.server, "rtmp publish started", "127.0.0.2") {
		t.Error("publish from 127.0.0.2 not started after the PATCH")
	}

	// Play: an ffmpeg publisher from 127.0.0.1; 127.0.0.2 is in the
	// denied 127.0.0.0/30, then a PATCH narrows the deny list.
	push(t, g.rtmpURL("guarded", "token=pub"), true)
	if !logWithin(g.server, 20*time.Second, "rtmp publish started", "127.0.0.1") {
		t.Fatal("the encoder at 127.0.0.1 did not start")
	}
	u := g.flvURL("guarded")
	if code, body := httpStatus(t, deniedIP, u); code != 403 || !strings.Contains(body, "address not allowed") {
		t.Errorf("play from 127.0.0.2: %d %q, want 403", code, body)
	}
	if !logHas(g.server, "play refused", "127.0.0.2", "stream live/guarded play deny list (127.0.0.0/30)") {
		t.Error("no play refusal logged")
	}
	if code := g.apiDo("PATCH", "/streams/live/guarded", map[string]any{"play_deny": []string{"127.0.0.1"}}, nil); code != 200 {
		t.Fatalf("PATCH play_deny: %d", code)
	}
	waitLiveWith(t, (*testCA)(nil).client(deniedIP), u, 20*time.Second)
	if code, _ := httpStatus(t, allowedIP, g.hlsURL("guarded")); code != 403 {
		t.Errorf("HLS from 127.0.0.1 after it was denied: %d, want 403", code)
	}
	// Outside the allow list (by a PATCH of play_allow): refused too.
	if code := g.apiDo("PATCH", "/streams/live/guarded", map[string]any{"play_allow": []string{"127.0.0.1"}, "play_deny": []string{}}, nil); code != 200 {
		t.Fatalf("PATCH play_allow: %d", code)
	}
	if code, _ := httpStatus(t, deniedIP, u); code != 403 {
		t.Errorf("play from 127.0.0.2, not on the allow list: %d, want 403", code)
	}
	if !logHas(g.server, "play refused", "127.0.0.2", "not on the stream live/guarded play allow list") {
		t.Error("no allow-list refusal logged")
	}

	// A PATCH that denies the live encoder's address drops it.
	if code := g.apiDo("PATCH", "/streams/live/guarded", map[string]any{"publish_deny": []string{"127.0.0.1"}}, nil); code != 200 {
		t.Fatalf("PATCH publish_deny: %d", code)
	}
	if !logHas(g.server, "publisher dropped: address now denied", "127.0.0.1", "stream live/guarded publish deny list") {
		t.Errorf("the encoder at 127.0.0.1 was not dropped:\n%s", g.tail(20))
	}
}

// TestHTTPListenerLimits runs the media listener with short limits: a
// request body trickled at 5 bytes/s is cut at read_timeout, an idle
// kept-alive connection is closed at idle_timeout, an oversized header is
// answered 431, an address over max_conns_per_ip is refused (logged) while
// another address is served, and an HTTP-FLV player keeps playing far
// beyond read_timeout and idle_timeout (it owns its connection).
func TestHTTPListenerLimits(t *testing.T) {
	needLoopback2(t)
	g := startGuarded(t, guardedOpts{
		http:  `read_header_timeout: 1s, read_timeout: 1s, idle_timeout: 1s, max_header_bytes: 4096, max_conns_per_ip: 10`,
		extra: "streams:\n  - {name: cam, publish_token: pub}\n",
	})
	push(t, g.rtmpURL("cam", "token=pub"), true)
	waitLive(t, g.flvURL("cam"), 15*time.Second)
	addr := fmt.Sprintf("127.0.0.1:%d", g.http)

	// closedWithin reports whether the server closes c (or answers and
	// closes) within d, reading whatever comes.
	closedWithin := func(c net.Conn, d time.Duration) bool {
		c.SetReadDeadline(time.Now().Add(d))
		_, err := io.Copy(io.Discard, c)
		return err == nil // EOF: closed by the server; a timeout is an error
	}

	t.Run("flv outlives the timeouts", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", g.flvURL("cam"), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		start := time.Now()
		var n int64
		buf := make([]byte, 64<<10)
		for time.Since(start) < 4*time.Second {
			k, err := resp.Body.Read(buf)
			n += int64(k)
			if err != nil {
				t.Fatalf("HTTP-FLV ended after %v and %d bytes: %v", time.Since(start), n, err)
			}
		}
		if n < 200<<10 {
			t.Fatalf("HTTP-FLV delivered %d bytes in 4 s", n)
		}
	})
	t.Run("slow body cut", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprint(c, "POST /qos HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
		done := make(chan bool, 1)
		go func() { done <- closedWithin(c, 8*time.Second) }()
		for i := 0; i < 40; i++ { // 5 bytes/s: the body would take 200 s
			if _, err := c.Write([]byte(" ")); err != nil {
				break
			}
			select {
			case closed := <-done:
				if !closed {
					t.Fatal("a trickled body kept the connection for 8 s")
				}
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
		if !<-done {
			t.Fatal("a trickled body kept the connection for 8 s")
		}
	})
	t.Run("idle keep-alive closed", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprint(c, "GET /live/nothere.flv HTTP/1.1\r\nHost: x\r\n\r\n")
		if !closedWithin(c, 8*time.Second) {
			t.Fatal("an idle kept-alive connection stayed open for 8 s")
		}
	})
	t.Run("header limit", func(t *testing.T) {
		req, _ := http.NewRequest("GET", g.flvURL("nothere"), nil)
		req.Header.Set("X-Pad", strings.Repeat("a", 16<<10))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("16 KiB header: %d, want 431", resp.StatusCode)
		}
	})
	t.Run("per address cap", func(t *testing.T) {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: deniedIP}}
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for i := 0; i < 15; i++ {
			c, err := d.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
		if !logHas(g.server, "connection refused", "listener=http", "127.0.0.2", "address at its cap of 10 connections") {
			t.Errorf("no refusal logged for the 11th connection from 127.0.0.2:\n%s", g.tail(10))
		}
		if code, _ := httpStatus(t, allowedIP, g.hlsURL("cam")); code != 200 {
			t.Errorf("127.0.0.1 during the flood from 127.0.0.2: %d", code)
		}
	})
}
