package e2e

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Helpers of the hostile-client suite (hostile_test.go): AMF0 values and
// bombs, a hand-written RTMP client and a hostile RTMP server (chunks
// written and read here, so that nothing checks what the tests send), the
// server's RSS, its log, and a canary stream that plays throughout.

// --- AMF0 -----------------------------------------------------------------

func amfString(s string) []byte {
	b := []byte{0x02, 0, 0}
	binary.BigEndian.PutUint16(b[1:], uint16(len(s)))
	return append(b, s...)
}

func amfNumber(f float64) []byte {
	b := make([]byte, 9)
	binary.BigEndian.PutUint64(b[1:], math.Float64bits(f))
	return b
}

var amfNull = []byte{0x05}

// amfProp is one property of an AMF0 object; val is an encoded value.
type amfProp struct {
	key string
	val []byte
}

// amfObject encodes an object; open leaves out the end marker (a bomb as
// the last value needs none: the decoder never gets there).
func amfObject(open bool, props ...amfProp) []byte {
	b := []byte{0x03}
	for _, p := range props {
		b = binary.BigEndian.AppendUint16(b, uint16(len(p.key)))
		b = append(b, p.key...)
		b = append(b, p.val...)
	}
	if !open {
		b = append(b, 0, 0, 0x09)
	}
	return b
}

// lengthBomb is a strict array declaring 2^31-1 elements and holding none.
func lengthBomb() []byte { return []byte{0x0a, 0x7f, 0xff, 0xff, 0xff} }

// depthBomb is n strict arrays of one element nested in each other around
// a null: 5n+1 bytes.
func depthBomb(n int) []byte {
	b := bytes.Repeat([]byte{0x0a, 0, 0, 0, 1}, n)
	return append(b, 0x05)
}

// depthBombLevels makes a depth bomb of about 8 MB, under the default
// max_message_size (8 MiB) and the pull client's limit (8 MiB) with room
// for the command around it.
const depthBombLevels = 1_600_000

// nestLevels makes a depth bomb of 7.5 KB, under the pre-authorization
// message size (8 KiB), so that the nesting limit is what refuses it.
const nestLevels = 1500

// bombKinds are the bombs every AMF case is tried with.
var bombKinds = []string{"length", "depth", "nest"}

// bomb returns the bomb of a kind: "length" (a strict array of 2^31-1
// values), "depth" (~8 MB of nested arrays) or "nest" (7.5 KB of them).
func bomb(kind string) []byte {
	switch kind {
	case "depth":
		return depthBomb(depthBombLevels)
	case "nest":
		return depthBomb(nestLevels)
	}
	return lengthBomb()
}

func concat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// --- RTMP chunks ----------------------------------------------------------

const (
	rtmpTypeSetChunkSize = 1
	rtmpTypeCommandAMF0  = 20
)

// appendChunks appends msg as chunks of chunkSize on chunk stream csid
// (2..319): a type 0 header, then type 3 continuations.
func appendChunks(dst []byte, csid int, typeID byte, sid uint32, payload []byte, chunkSize int) []byte {
	basic := func(fmtBits byte) {
		switch {
		case csid < 64:
			dst = append(dst, fmtBits<<6|byte(csid))
		default:
			dst = append(dst, fmtBits<<6, byte(csid-64))
		}
	}
	basic(0)
	n := len(payload)
	dst = append(dst, 0, 0, 0, byte(n>>16), byte(n>>8), byte(n), typeID)
	dst = binary.LittleEndian.AppendUint32(dst, sid)
	for off := 0; ; {
		k := min(chunkSize, n-off)
		dst = append(dst, payload[off:off+k]...)
		off += k
		if off >= n {
			return dst
		}
		basic(3)
	}
}

// rtmpMsg is one message read by chunkReader.
type rtmpMsg struct {
	typeID  byte
	sid     uint32
	payload []byte
}

// chunkReader reads RTMP chunks (all header forms, extended timestamps, Set
// Chunk Size) and returns whole messages; messages are at most 16 MiB (the
// 3-byte length field).
type chunkReader struct {
	r         *bufio.Reader
	chunkSize int
	streams   map[uint32]*chunkState
}

type chunkState struct {
	length uint32
	typeID byte
	sid    uint32
	ext    bool
	buf    []byte
}

func newChunkReader(r io.Reader) *chunkReader {
	return &chunkReader{r: bufio.NewReaderSize(r, 64<<10), chunkSize: 128, streams: map[uint32]*chunkState{}}
}

func (c *chunkReader) read() (rtmpMsg, error) {
	for range 1 << 20 {
		var h [11]byte
		if _, err := io.ReadFull(c.r, h[:1]); err != nil {
			return rtmpMsg{}, err
		}
		fmtBits, csid := h[0]>>6, uint32(h[0]&0x3f)
		switch csid {
		case 0:
			if _, err := io.ReadFull(c.r, h[:1]); err != nil {
				return rtmpMsg{}, err
			}
			csid = 64 + uint32(h[0])
		case 1:
			if _, err := io.ReadFull(c.r, h[:2]); err != nil {
				return rtmpMsg{}, err
			}
			csid = 64 + uint32(h[0]) + uint32(h[1])<<8
		}
		st := c.streams[csid]
		if st == nil {
			if len(c.streams) > 64 {
				return rtmpMsg{}, errors.New("more than 64 chunk streams")
			}
			st = &chunkState{}
			c.streams[csid] = st
		}
		hl := [4]int{11, 7, 3, 0}[fmtBits]
		if _, err := io.ReadFull(c.r, h[:hl]); err != nil {
			return rtmpMsg{}, err
		}
		if hl > 0 {
			st.ext = h[0] == 0xff && h[1] == 0xff && h[2] == 0xff
		}
		if hl >= 7 {
			st.length = uint32(h[3])<<16 | uint32(h[4])<<8 | uint32(h[5])
			st.typeID = h[6]
		}
		if hl == 11 {
			st.sid = binary.LittleEndian.Uint32(h[7:11])
		}
		if st.ext {
			if _, err := io.ReadFull(c.r, h[:4]); err != nil {
				return rtmpMsg{}, err
			}
		}
		if st.length == 0 {
			return rtmpMsg{}, fmt.Errorf("empty message on chunk stream %d", csid)
		}
		k := min(c.chunkSize, int(st.length)-len(st.buf))
		start := len(st.buf)
		st.buf = append(st.buf, make([]byte, k)...)
		if _, err := io.ReadFull(c.r, st.buf[start:]); err != nil {
			return rtmpMsg{}, err
		}
		if len(st.buf) < int(st.length) {
			continue
		}
		m := rtmpMsg{typeID: st.typeID, sid: st.sid, payload: st.buf}
		st.buf = nil
		if m.typeID == rtmpTypeSetChunkSize && len(m.payload) >= 4 {
			c.chunkSize = int(binary.BigEndian.Uint32(m.payload) & 0x7fffffff)
			if c.chunkSize < 1 || c.chunkSize > 1<<24 {
				return rtmpMsg{}, fmt.Errorf("chunk size %d", c.chunkSize)
			}
		}
		return m, nil
	}
	return rtmpMsg{}, errors.New("too many chunks")
}

// commandName returns the name and transaction ID a command message starts
// with.
func commandName(p []byte) (string, float64, bool) {
	if len(p) < 3 || p[0] != 0x02 {
		return "", 0, false
	}
	n := int(binary.BigEndian.Uint16(p[1:3]))
	if len(p) < 3+n+9 || p[3+n] != 0x00 {
		return "", 0, false
	}
	return string(p[3 : 3+n]), math.Float64frombits(binary.BigEndian.Uint64(p[4+n:])), true
}

// --- the hand-written RTMP client -------------------------------------------

// rawRTMP is an RTMP client connection that sends whatever it is given.
type rawRTMP struct {
	nc    net.Conn
	cr    *chunkReader
	chunk int // outgoing chunk size
}

// loopbackDialer dials from local address 127.0.0.x (x = host, 0: any).
func loopbackDialer(host int) *net.Dialer {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if host > 0 {
		d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(host))}
	}
	return d
}

// dialRTMP connects from 127.0.0.host and runs the (simple) handshake.
func dialRTMP(addr string, host int) (*rawRTMP, error) {
	nc, err := loopbackDialer(host).Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &rawRTMP{nc: nc, cr: newChunkReader(nc), chunk: 128}
	if err := c.handshake(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("handshake: %w", err)
	}
	return c, nil
}

func (c *rawRTMP) handshake() error {
	_ = c.nc.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.nc.SetDeadline(time.Time{})
	c0c1 := make([]byte, 1537)
	c0c1[0] = 3
	for i := 9; i < len(c0c1); i++ {
		c0c1[i] = byte(i * 7)
	}
	if _, err := c.nc.Write(c0c1); err != nil {
		return err
	}
	s := make([]byte, 3073)
	if _, err := io.ReadFull(c.cr.r, s); err != nil {
		return err
	}
	_, err := c.nc.Write(s[1:1537]) // C2 echoes S1
	return err
}

func (c *rawRTMP) local() string { return c.nc.LocalAddr().String() }

func (c *rawRTMP) Close() error { return c.nc.Close() }

// send writes one message with a write deadline; errors are returned (the
// server may close the connection half way through an attack).
func (c *rawRTMP) send(csid int, typeID byte, sid uint32, payload []byte) error {
	_ = c.nc.SetWriteDeadline(time.Now().Add(20 * time.Second))
	_, err := c.nc.Write(appendChunks(nil, csid, typeID, sid, payload, c.chunk))
	return err
}

// setChunkSize announces and then uses a larger outgoing chunk size.
func (c *rawRTMP) setChunkSize(n int) error {
	if err := c.send(2, rtmpTypeSetChunkSize, 0, binary.BigEndian.AppendUint32(nil, uint32(n))); err != nil {
		return err
	}
	c.chunk = n
	return nil
}

// await reads messages until the command answer named one of names (with
// the transaction txID, for _result and _error) and returns its payload.
func (c *rawRTMP) await(within time.Duration, txID float64, names ...string) (string, []byte, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(within))
	defer c.nc.SetReadDeadline(time.Time{})
	for range 256 {
		m, err := c.cr.read()
		if err != nil {
			return "", nil, err
		}
		if m.typeID != rtmpTypeCommandAMF0 {
			continue
		}
		name, tx, ok := commandName(m.payload)
		if !ok {
			continue
		}
		for _, n := range names {
			if n == name && (n == "onStatus" || tx == txID) {
				return name, m.payload, nil
			}
		}
	}
	return "", nil, errors.New("no answer in 256 messages")
}

// connectBody is a connect command for app live.
func connectBody(tcURL string, extra ...amfProp) []byte {
	props := append([]amfProp{
		{"app", amfString("live")},
		{"type", amfString("nonprivate")},
		{"flashVer", amfString("FMLE/3.0 (compatible; e2e)")},
		{"tcUrl", amfString(tcURL)},
	}, extra...)
	return concat(amfString("connect"), amfNumber(1), amfObject(len(extra) > 0, props...))
}

// connectAndCreate runs connect and createStream and returns the stream ID.
func (c *rawRTMP) connectAndCreate(tcURL string) (uint32, error) {
	if err := c.send(3, rtmpTypeCommandAMF0, 0, connectBody(tcURL)); err != nil {
		return 0, err
	}
	if name, _, err := c.await(10*time.Second, 1, "_result", "_error"); err != nil {
		return 0, fmt.Errorf("connect: %w", err)
	} else if name != "_result" {
		return 0, fmt.Errorf("connect: %s", name)
	}
	if err := c.send(3, rtmpTypeCommandAMF0, 0, concat(amfString("createStream"), amfNumber(2), amfNull)); err != nil {
		return 0, err
	}
	name, p, err := c.await(10*time.Second, 2, "_result", "_error")
	if err != nil {
		return 0, fmt.Errorf("createStream: %w", err)
	}
	if name != "_result" {
		return 0, fmt.Errorf("createStream: %s", name)
	}
	// "_result", 2, null, <number>
	if len(p) < 9 || p[len(p)-9] != 0x00 {
		return 0, fmt.Errorf("createStream result %x", p)
	}
	return uint32(math.Float64frombits(binary.BigEndian.Uint64(p[len(p)-8:]))), nil
}

// waitClosed reads and discards until the server closes the connection or
// within passes; it reports whether the server closed it.
func waitClosed(nc net.Conn, within time.Duration) bool {
	_ = nc.SetReadDeadline(time.Now().Add(within))
	defer nc.SetReadDeadline(time.Time{})
	buf := make([]byte, 32<<10)
	for {
		if _, err := nc.Read(buf); err != nil {
			var ne net.Error
			return !(errors.As(err, &ne) && ne.Timeout())
		}
	}
}

// --- a hostile RTMP server ------------------------------------------------

// hostileRTMP is an RTMP server for the pull and relay clients to talk to.
// Until it is armed it answers like a server should (connect, createStream,
// publish and play succeed, media is read and dropped); armed, it answers
// at the stage it is given with a command holding a bomb.
type hostileRTMP struct {
	t  *testing.T
	ln net.Listener

	mu    sync.Mutex
	mode  hostileMode
	conns map[net.Conn]bool
	wg    sync.WaitGroup

	bombs atomic.Int64 // bomb answers sent
}

// hostileMode says where a hostile server answers with a bomb. An empty
// stage answers like a benign server.
type hostileMode struct {
	// "", "connect" (answer to connect), "stream" (answer to play or
	// publish), "hold" (after a successful play or publish, 31 chunk
	// streams each with a bigMessage held one byte short)
	stage  string
	answer string // "_error" or "onStatus"
	bomb   []byte
}

func startHostileRTMP(t *testing.T) *hostileRTMP {
	t.Helper()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	h := &hostileRTMP{t: t, ln: ln, conns: map[net.Conn]bool{}}
	h.wg.Add(1)
	go h.serve()
	t.Cleanup(h.close)
	return h
}

func (h *hostileRTMP) addr() string { return h.ln.Addr().String() }

// arm sets the mode and closes the connections open now, so that clients
// reconnect and meet it.
func (h *hostileRTMP) arm(m hostileMode) {
	h.mu.Lock()
	h.mode = m
	for c := range h.conns {
		c.Close()
	}
	h.mu.Unlock()
	h.bombs.Store(0)
}

func (h *hostileRTMP) close() {
	h.ln.Close()
	h.mu.Lock()
	for c := range h.conns {
		c.Close()
	}
	h.mu.Unlock()
	h.wg.Wait()
}

func (h *hostileRTMP) serve() {
	defer h.wg.Done()
	for {
		c, err := h.ln.Accept()
		if err != nil {
			return
		}
		h.mu.Lock()
		h.conns[c] = true
		h.mu.Unlock()
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			defer func() {
				h.mu.Lock()
				delete(h.conns, c)
				h.mu.Unlock()
				c.Close()
			}()
			h.session(c)
		}()
	}
}

func (h *hostileRTMP) session(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	cr := newChunkReader(c)
	c0c1 := make([]byte, 1537)
	if _, err := io.ReadFull(cr.r, c0c1); err != nil {
		return
	}
	s := make([]byte, 1+1536+1536)
	s[0] = 3
	copy(s[1537:], c0c1[1:])
	if _, err := c.Write(s); err != nil {
		return
	}
	if _, err := io.ReadFull(cr.r, make([]byte, 1536)); err != nil {
		return
	}
	h.mu.Lock()
	mode := h.mode
	h.mu.Unlock()
	out := func(csid int, sid uint32, payload []byte) bool {
		_, err := c.Write(appendChunks(nil, csid, rtmpTypeCommandAMF0, sid, payload, 4096))
		return err == nil
	}
	if _, err := c.Write(appendChunks(nil, 2, rtmpTypeSetChunkSize, 0, binary.BigEndian.AppendUint32(nil, 4096), 128)); err != nil {
		return
	}
	bombAnswer := func(tx float64, sid uint32) {
		var body []byte
		if mode.answer == "_error" {
			body = concat(amfString("_error"), amfNumber(tx), amfNull,
				amfObject(true, amfProp{"level", amfString("error")}, amfProp{"code", amfString("NetConnection.Connect.Rejected")},
					amfProp{"description", mode.bomb}))
		} else {
			body = concat(amfString("onStatus"), amfNumber(0), amfNull,
				amfObject(true, amfProp{"level", amfString("status")}, amfProp{"code", amfString("NetStream.Play.Start")},
					amfProp{"description", mode.bomb}))
		}
		h.bombs.Add(1) // counted when sent: a client may refuse it before the end
		out(3, sid, body)
	}
	for range 100000 {
		m, err := cr.read()
		if err != nil {
			return
		}
		if m.typeID != rtmpTypeCommandAMF0 {
			continue
		}
		name, tx, ok := commandName(m.payload)
		if !ok {
			continue
		}
		switch name {
		case "connect":
			if mode.stage == "connect" {
				bombAnswer(tx, 0)
				continue
			}
			out(3, 0, concat(amfString("_result"), amfNumber(tx),
				amfObject(false, amfProp{"fmsVer", amfString("FMS/3,0,1,123")}, amfProp{"capabilities", amfNumber(31)}),
				amfObject(false, amfProp{"level", amfString("status")}, amfProp{"code", amfString("NetConnection.Connect.Success")},
					amfProp{"description", amfString("ok")})))
		case "createStream":
			out(3, 0, concat(amfString("_result"), amfNumber(tx), amfNull, amfNumber(1)))
		case "publish", "play":
			if mode.stage == "stream" {
				bombAnswer(tx, 1)
				continue
			}
			code := "NetStream.Publish.Start"
			if name == "play" {
				code = "NetStream.Play.Start"
			}
			out(5, 1, concat(amfString("onStatus"), amfNumber(0), amfNull,
				amfObject(false, amfProp{"level", amfString("status")}, amfProp{"code", amfString(code)})))
			if mode.stage == "hold" {
				h.bombs.Add(1)
				h.hold(c)
			}
		}
	}
}

// hold sends, on 31 chunk streams, a video message of bigMessage's shape
// without its last chunk, then waits for the client to close.
func (h *hostileRTMP) hold(c net.Conn) {
	m := bigMessage
	if _, err := c.Write(appendChunks(nil, 2, rtmpTypeSetChunkSize, 0, binary.BigEndian.AppendUint32(nil, uint32(m.chunk)), 4096)); err != nil {
		return
	}
	payload := make([]byte, m.chunk*m.chunks+1)
	payload[0], payload[1] = 0x27, 1
	for k := range 31 {
		b := appendChunks(nil, 10+k, 9, 1, payload, m.chunk)
		if _, err := c.Write(b[:len(b)-2]); err != nil {
			return
		}
	}
	_, _ = io.Copy(io.Discard, c)
}

// --- the server under attack ----------------------------------------------

// startHostileServer starts livefuse like startServer, with rtmp and http
// fields added to those sections (YAML flow-map entries, "" for none) and
// extra appended.
func startHostileServer(t *testing.T, rtmpFields, httpFields, extra string) *server {
	t.Helper()
	s := &server{t: t, dir: t.TempDir(), token: apiToken}
	s.rtmp, s.rtsp, s.http, s.apiPort = freePort(t), freePort(t), freePort(t), freePort(t)
	s.writeHostileConfig(rtmpFields, httpFields, extra)
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *server) writeHostileConfig(rtmpFields, httpFields, extra string) {
	t := s.t
	sep := func(f string) string {
		if f == "" {
			return ""
		}
		return ", " + f
	}
	udp := freeUDPPair(t)
	cfg := fmt.Sprintf(`data_dir: %s
log_level: debug
rtmp: {addr: "127.0.0.1:%d"%s}
rtsp: {addr: "127.0.0.1:%d", udp_rtp_addr: "127.0.0.1:%d", udp_rtcp_addr: "127.0.0.1:%d"}
http: {addr: "127.0.0.1:%d", public_host: "127.0.0.1"%s}
lms: {api_addr: "127.0.0.1:%d", api_token: %q}
`, filepath.Join(s.dir, "data"), s.rtmp, sep(rtmpFields), s.rtsp, udp, udp+1, s.http, sep(httpFields), s.apiPort, apiToken) + extra
	s.cfgPath = filepath.Join(s.dir, "livefuse.yaml")
	if err := os.WriteFile(s.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// alive reports whether the process still runs.
func (s *server) alive() bool {
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// rss returns the process's resident set in bytes (VmRSS), 0 once it is gone.
func (s *server) rss() int64 {
	return procRSS(s.cmd.Process.Pid)
}

func procRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// rssPeak samples the server's RSS every 50 ms until stopped and returns
// the largest sample.
type rssPeak struct {
	stop chan struct{}
	done chan int64
	once sync.Once
	max  int64
}

func watchRSS(s *server) *rssPeak {
	p := &rssPeak{stop: make(chan struct{}), done: make(chan int64, 1)}
	go func() {
		peak := s.rss()
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-p.stop:
				p.done <- max(peak, s.rss())
				return
			case <-tk.C:
				peak = max(peak, s.rss())
			}
		}
	}()
	return p
}

// peak stops the sampling (once) and returns the largest sample.
func (p *rssPeak) peak() int64 {
	p.once.Do(func() {
		close(p.stop)
		p.max = <-p.done
	})
	return p.max
}

// logLen marks the log's current end, for logSince.
func (s *server) logLen() int {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.log.Len()
}

func (s *server) logSince(off int) string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	b := s.log.Bytes()
	if off > len(b) {
		off = 0 // a restart keeps the buffer; never past its end
	}
	return string(b[off:])
}

// refusalLines returns the log lines since off that log a refusal: a line
// with a reason key that says "refused" or names a "timeout" (an HTTP
// connection closed for its idle or read timeout).
func (s *server) refusalLines(off int) []string {
	var out []string
	for _, line := range strings.Split(s.logSince(off), "\n") {
		if strings.Contains(line, "reason=") && (strings.Contains(line, "refused") || strings.Contains(line, "timeout")) {
			out = append(out, line)
		}
	}
	return out
}

// findRefusals waits up to within for refusal lines (logged since off)
// naming each set of needles: one line must hold every needle of a set. It
// returns, per set, the first line found ("" for none).
func (s *server) findRefusals(off int, within time.Duration, sets [][]string) []string {
	found := make([]string, len(sets))
	deadline := time.Now().Add(within)
	for {
		lines := s.refusalLines(off)
		missing := 0
		for i, set := range sets {
			if found[i] != "" {
				continue
			}
			for _, line := range lines {
				ok := true
				for _, n := range set {
					if !strings.Contains(line, n) {
						ok = false
						break
					}
				}
				if ok {
					found[i] = line
					break
				}
			}
			if found[i] == "" {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			return found
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// --- the canary -----------------------------------------------------------

// canary is a stream pushed by ffmpeg and played over HTTP-FLV for the
// whole suite; every video frame's arrival is stamped.
type canary struct {
	p *flvPlayer
}

const canaryToken = "canary-token"

// canaryStreamYAML declares the canary stream.
const canaryStreamYAML = `streams:
  - {app: live, name: canary, publish_token: "` + canaryToken + `"}
`

// startCanary pushes the looping clip to the canary stream and plays it.
// Its processes and player belong to t (the whole suite).
func startCanary(t *testing.T, s *server) *canary {
	t.Helper()
	push(t, s.rtmpURL("canary", "token="+canaryToken), true)
	waitLive(t, s.flvURL("canary"), 15*time.Second)
	p := playFLV(t, s.flvURL("canary"), false)
	p.waitFrames(t, 25, 10*time.Second)
	return &canary{p: p}
}
