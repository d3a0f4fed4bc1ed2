package origin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livefuse/livefuse/av"
	"github.com/livefuse/livefuse/encryption"
)

// EncryptionConfig configures the encrypted outputs of the hub's streams.
// It is set by the wiring (the key store is there), not by YAML.
type EncryptionConfig struct {
	// NewKey makes a content key for stream ("app/name") and stores it
	// where the key service finds it. nil: no encrypted outputs (a stream
	// whose policy asks for encryption then plays nothing but 403 rather
	// than clear).
	NewKey func(ctx context.Context, stream string) (*encryption.Key, error)
	// RotateSegments rotates the HLS key every so many segments; 0 keeps
	// the session key.
	RotateSegments int
	// AllStreams runs the encrypted FLV output of every live stream
	// (encryption.outputs: all), so that turning encryption on reaches
	// every HTTP-FLV and RTMP player, also those that joined while it was
	// off; until it is first turned on, that output is the clear stream
	// byte for byte. False runs it only for streams encrypted when they go
	// live or turned on while live (saves one internal reader per clear
	// stream; players that joined before stay clear until they reconnect).
	AllStreams bool
}

// sessionKeys is the key source of one live stream: the session key
// shared by FLV and HLS (made at first use), and fresh keys for rotation.
type sessionKeys struct {
	stream string
	newKey func(ctx context.Context, stream string) (*encryption.Key, error)

	mu      sync.Mutex
	session *encryption.Key
}

// keyWait bounds the wait for the key store when a key is made.
const keyWait = 5 * time.Second

// get returns the session key, making it at first use.
func (k *sessionKeys) get() (*encryption.Key, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.session != nil {
		return k.session, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), keyWait)
	defer cancel()
	key, err := k.newKey(ctx, k.stream)
	if err != nil {
		return nil, fmt.Errorf("session key of %s: %w", k.stream, err)
	}
	k.session = key
	return key, nil
}

// forPackager returns the key source of the stream's HLS packager: the
// session key first, then new keys (rotation). It is called from the
// packager's goroutine only.
func (k *sessionKeys) forPackager() func(ctx context.Context) (*encryption.Key, error) {
	first := true
	return func(ctx context.Context) (*encryption.Key, error) {
		if first {
			first = false
			return k.get()
		}
		return k.newKey(ctx, k.stream)
	}
}

// cryptFLV is the encrypted FLV output of one live stream, for HTTP-FLV
// and RTMP players: one internal reader of the stream encrypts every
// packet once (encryption.Encryptor, the FLV scheme) into out, whose
// readers are the players; so the cost of encryption does not grow with
// the players. out is not a second stream of the hub: it belongs to the
// stream's entry, its players are counted as the stream's, and it ends
// with it.
//
// Encryption is turned on and off by the stream's policy (want); the
// change applies at the next keyframe. out carries the onEncryption
// signals, and Stream puts the one in effect before a reader's first
// media packet and before every change, in stream order: after
// "encrypted" nothing clear goes out and after "clear" nothing encrypted,
// for players that joined at any time, held audio included.
type cryptFLV struct {
	log  *slog.Logger
	keys *sessionKeys
	src  *Reader
	enc  *encryption.Encryptor
	out  *Stream
	done chan struct{}

	want atomic.Bool // the state the policy asks for

	// Owned by run's goroutine.
	applied bool // the state last given to enc
	noKey   bool // encryption is asked for and no key could be made: nothing goes out
	everOn  bool // encryption was on in this session
	errs    tshlsLimiter
}

// newCryptFLV starts the encrypted FLV output of s; with on, nothing goes
// out before the session key is there (the stream is encrypted from its
// first packet). log names the stream, hubLog does not.
func newCryptFLV(cfg Config, hubLog, log *slog.Logger, s *Stream, keys *sessionKeys, on bool) (*cryptFLV, error) {
	// The encryptor adds the stream to its log lines itself.
	enc, err := encryption.NewEncryptor(encryption.EncryptorConfig{Stream: keys.stream, Logger: hubLog})
	if err != nil {
		return nil, err
	}
	out := NewStream(cfg, log) // no metrics: its packets are the stream's
	out.signals = true
	c := &cryptFLV{log: log, keys: keys, enc: enc, out: out, done: make(chan struct{})}
	c.want.Store(on)
	c.src = s.subscribe(true, roleInternal)
	go c.run()
	return c, nil
}

// setEncrypted asks for encryption on or off from the next keyframe.
func (c *cryptFLV) setEncrypted(on bool) { c.want.Store(on) }

// ended reports whether the output has ended with its stream.
func (c *cryptFLV) ended() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *cryptFLV) run() {
	defer close(c.done)
	defer c.out.Close()
	defer c.src.Close()
	pkts := make([]*av.Packet, 0, 64)
	var out []*av.Packet
	for {
		c.apply()
		var err error
		pkts, err = c.src.ReadPackets(context.Background(), pkts[:0])
		for _, p := range pkts {
			out = c.write(p, out[:0])
		}
		clear(pkts)
		if err != nil {
			if errors.Is(err, ErrDropped) {
				c.log.Error("encrypted output fell behind the stream and stopped")
			}
			return
		}
	}
}

// apply gives the encryptor the state asked for. Turning encryption on
// needs the session key: the packets wait in the reader's queue while it
// is made (a key store write), so none goes out clear meanwhile.
func (c *cryptFLV) apply() {
	on := c.want.Load()
	if on == c.applied {
		return
	}
	if on {
		k, err := c.keys.get()
		if err != nil {
			// Encryption is asked for: the stream stops rather than goes
			// on clear, and the key is tried again at the next batch.
			c.noKey = true
			c.errs.log(c.log, "encrypted output paused: no content key", err)
			return
		}
		c.enc.SetKey(k)
	}
	c.noKey = false
	c.enc.SetEnabled(on)
	c.applied = on
	c.log.Info("encryption change requested", "encrypted", on)
}

// write encrypts p into the output. Bad media costs only the packet.
func (c *cryptFLV) write(p *av.Packet, out []*av.Packet) []*av.Packet {
	defer func() {
		if r := recover(); r != nil {
			c.errs.log(c.log, "encrypted output: packet skipped on bad media", fmt.Errorf("panic: %v", r))
		}
	}()
	if c.noKey {
		return out // encryption asked for, no key: nothing goes out clear
	}
	out, err := c.enc.Encrypt(out, p)
	if err != nil {
		c.errs.log(c.log, "flv encryption", err)
	}
	for _, q := range out {
		if q.Kind == av.KindData && encryption.IsSignal(q.Data) && !c.everOn {
			// Until encryption is first turned on, the output stays
			// byte for byte the clear stream: no "off" signals.
			if sg, err := encryption.ParseSignal(q.Data); err != nil || !sg.Encrypted {
				continue
			}
			c.everOn = true
		}
		c.out.Write(q)
	}
	clear(out)
	return out
}

// subscribe returns a player's reader of the encrypted output.
func (c *cryptFLV) subscribe(role int) *Reader { return c.out.subscribe(false, role) }

// serveFLV streams the encrypted output as HTTP-FLV.
func (c *cryptFLV) serveFLV(w http.ResponseWriter, r *http.Request, cfg Config, m *metrics, log *slog.Logger) {
	hdr := w.Header()
	hdr.Set("Content-Type", "video/x-flv")
	hdr.Set("Cache-Control", "no-cache, no-store")
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	rd := c.subscribe(roleFLV)
	if cfg.FLVCoalesce > 0 {
		rd.holdAudio(cfg.FLVCoalesce) // as for clear players
	}
	writeFLV(w, r, c.out, rd, cfg.MaxLag, m, log)
}
