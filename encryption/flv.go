package encryption

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/livefuse/livefuse/av"
)

// SignalInterval is how often an audio-only stream repeats its
// onEncryption tag; streams with video repeat it before every keyframe.
const SignalInterval = 2 * time.Second

// EncryptorConfig configures an Encryptor.
type EncryptorConfig struct {
	// Stream is "app/name", for logs and the default key URI.
	Stream string
	// Key is the first key. Required when Enabled.
	Key *Key
	// Enabled turns encryption on from the first keyframe.
	Enabled bool
	// KeyURI gives the URI announced for a key. Nil means "/keys/" + Stream
	// + "/" + key ID, the path of the key Handler.
	KeyURI func(k *Key) string
	// Logger gets state changes. Nil means slog.Default().
	Logger *slog.Logger
}

// Encryptor turns a stream of clear packets into the FLV scheme: video
// slices and raw AAC frames encrypted in place (same sizes), sequence
// headers and script packets untouched, and an onEncryption script packet
// before every sync point (video keyframe; audio frame of an audio-only
// stream) telling players the state of the packets that follow.
//
// Encrypt is called by one goroutine, the one reading the clear stream.
// SetKey and SetEnabled may be called from any goroutine; they take effect
// at the next sync point, so decoders never see a GOP that is half
// encrypted.
type Encryptor struct {
	stream string
	keyURI func(k *Key) string
	log    *slog.Logger

	mu      sync.Mutex
	pendKey *Key
	pendOn  bool

	active atomic.Bool // the state in effect, for Enabled

	// Owned by the Encrypt goroutine.
	synced   bool // a signal went out
	on       bool
	key      *Key
	sig      []byte // body of the last signal, reused while unchanged
	sigDTS   time.Duration
	sawVideo bool
	dropped  int
}

// NewEncryptor returns an Encryptor in the configured state.
func NewEncryptor(cfg EncryptorConfig) (*Encryptor, error) {
	if cfg.Enabled && cfg.Key == nil {
		return nil, errors.New("encryptor: enabled without a key")
	}
	e := &Encryptor{
		stream:  cfg.Stream,
		keyURI:  cfg.KeyURI,
		log:     cfg.Logger,
		pendKey: cfg.Key,
		pendOn:  cfg.Enabled,
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	e.log = e.log.With("stream", cfg.Stream)
	if e.keyURI == nil {
		e.keyURI = func(k *Key) string { return KeyPath(cfg.Stream, k.ID) }
	}
	return e, nil
}

// KeyPath returns the path of a key at the key Handler: /keys/app/name/id.
func KeyPath(stream, id string) string { return "/keys/" + stream + "/" + id }

// SetKey makes k the key from the next sync point on (key rotation).
func (e *Encryptor) SetKey(k *Key) {
	e.mu.Lock()
	e.pendKey = k
	e.mu.Unlock()
}

// SetEnabled turns encryption on or off from the next sync point on.
// Turning it on without a key leaves it off (and logs why).
func (e *Encryptor) SetEnabled(on bool) {
	e.mu.Lock()
	e.pendOn = on
	e.mu.Unlock()
}

// Enabled reports whether the packets going out now are encrypted.
func (e *Encryptor) Enabled() bool { return e.active.Load() }

// Encrypt appends to dst what goes out for the clear packet p: p itself
// when it stays clear, an encrypted copy when not (p is never modified),
// preceded by an onEncryption packet at sync points. Media packets before
// the first sync point are dropped, as no player could decode them.
// onEncryption packets arriving from upstream are dropped: the output
// carries only this Encryptor's signals.
//
// A packet whose AVCC framing is malformed cannot be encrypted safely; it is
// dropped and the error says why. The stream goes on.
func (e *Encryptor) Encrypt(dst []*av.Packet, p *av.Packet) ([]*av.Packet, error) {
	switch {
	case p.Kind == av.KindData:
		if IsSignal(p.Data) {
			return dst, nil
		}
		return append(dst, p), nil
	case p.Header:
		if p.Kind == av.KindVideo {
			e.sawVideo = true
		}
		return append(dst, p), nil
	case p.Kind == av.KindVideo:
		e.sawVideo = true
		if p.Key {
			dst = e.sync(dst, p.DTS, true)
		}
	case p.Kind == av.KindAudio:
		if !e.sawVideo {
			dst = e.sync(dst, p.DTS, false)
		}
	default:
		return append(dst, p), nil
	}
	if !e.synced {
		e.dropped++
		return dst, nil
	}
	if !e.on {
		return append(dst, p), nil
	}
	q := *p
	var err error
	switch {
	case p.Kind == av.KindVideo && p.Codec == av.CodecH264:
		q.Data, err = EncryptAVCC(make([]byte, 0, len(p.Data)), p.Data, e.key)
	case p.Kind == av.KindAudio && p.Codec == av.CodecAAC:
		q.Data, err = EncryptAAC(make([]byte, 0, len(p.Data)), p.Data, e.key)
	default:
		// A codec the layout does not cover cannot go out clear while
		// encryption is on.
		err = fmt.Errorf("%s/%s packet: no encryption layout", p.Kind, p.Codec)
	}
	if err != nil {
		return dst, fmt.Errorf("encrypt %s packet at %v: %w", p.Kind, p.DTS, err)
	}
	return append(dst, &q), nil
}

// sync applies the pending state at a sync point and appends the signal.
// Audio sync points of audio-only streams repeat an unchanged signal only
// every SignalInterval.
func (e *Encryptor) sync(dst []*av.Packet, dts time.Duration, video bool) []*av.Packet {
	e.mu.Lock()
	key, on := e.pendKey, e.pendOn
	e.mu.Unlock()
	if on && key == nil {
		if e.on || !e.synced {
			e.log.Warn("encryption stays off: no key")
		}
		on = false
	}
	if !on {
		key = e.key // keep the last key for a later "on" without SetKey
	}
	changed := !e.synced || on != e.on || (on && key != e.key)
	if !changed && !video && dts-e.sigDTS < SignalInterval && dts >= e.sigDTS {
		return dst
	}
	if changed {
		if on != e.on || !e.synced {
			e.log.Info("encryption state", "encrypted", on, "key_id", keyID(key, on), "dropped_before_start", e.dropped)
		} else {
			e.log.Info("encryption key rotated", "key_id", key.ID)
		}
		e.on, e.key, e.synced = on, key, true
		e.active.Store(on)
		s := Signal{Encrypted: on}
		if on {
			s.KeyID, s.KeyURI, s.IV = key.ID, e.keyURI(key), key.IV
		}
		e.sig = s.Marshal()
	}
	e.sigDTS = dts
	// Packets are shared by every reader and never modified, so the
	// repeated signals can share one body.
	return append(dst, &av.Packet{Kind: av.KindData, DTS: dts, Data: e.sig})
}

func keyID(k *Key, on bool) string {
	if !on || k == nil {
		return ""
	}
	return k.ID
}

// DecryptorConfig configures a Decryptor.
type DecryptorConfig struct {
	// Lookup returns the key of an ID announced by an onEncryption tag
	// (from a KeyStore, or fetched from the tag's key URI). The IV comes
	// from the tag. Required.
	Lookup func(id string) (*Key, error)
}

// Decryptor reverses an Encryptor from the packets alone plus a key
// lookup: it follows the onEncryption tags, decrypts the media packets
// they announce as encrypted and drops the tags, so that its output is the
// clear stream. Packets before the first tag pass through as they are. It
// is not safe for concurrent use.
type Decryptor struct {
	lookup func(id string) (*Key, error)
	on     bool
	key    *Key
}

// NewDecryptor returns a Decryptor.
func NewDecryptor(cfg DecryptorConfig) (*Decryptor, error) {
	if cfg.Lookup == nil {
		return nil, errors.New("decryptor: no key lookup")
	}
	return &Decryptor{lookup: cfg.Lookup}, nil
}

// Encrypted reports whether the packets now expected are encrypted.
func (d *Decryptor) Encrypted() bool { return d.on }

// Decrypt appends to dst the clear form of p: nothing for an onEncryption
// packet (it updates the state), a decrypted copy of an encrypted media
// packet, p itself otherwise. p is never modified.
//
// Errors (a malformed onEncryption tag, an unknown key, malformed AVCC)
// leave the state as it was; the caller should treat them as fatal for
// the stream, since what follows cannot be trusted.
func (d *Decryptor) Decrypt(dst []*av.Packet, p *av.Packet) ([]*av.Packet, error) {
	if p.Kind == av.KindData {
		if !IsSignal(p.Data) {
			return append(dst, p), nil
		}
		s, err := ParseSignal(p.Data)
		if err != nil {
			return dst, fmt.Errorf("decrypt at %v: %w", p.DTS, err)
		}
		if !s.Encrypted {
			d.on = false
			return dst, nil
		}
		if d.key == nil || d.key.ID != s.KeyID {
			k, err := d.lookup(s.KeyID)
			if err != nil {
				return dst, fmt.Errorf("decrypt at %v: key %s: %w", p.DTS, s.KeyID, err)
			}
			if k == nil {
				return dst, fmt.Errorf("decrypt at %v: key %s: lookup gave no key", p.DTS, s.KeyID)
			}
			d.key = &Key{ID: s.KeyID, Key: k.Key, IV: s.IV}
		} else if d.key.IV != s.IV {
			d.key = &Key{ID: s.KeyID, Key: d.key.Key, IV: s.IV}
		}
		d.on = true
		return dst, nil
	}
	if !d.on || p.Header {
		return append(dst, p), nil
	}
	q := *p
	var err error
	switch {
	case p.Kind == av.KindVideo && p.Codec == av.CodecH264:
		q.Data, err = DecryptAVCC(make([]byte, 0, len(p.Data)), p.Data, d.key)
	case p.Kind == av.KindAudio && p.Codec == av.CodecAAC:
		q.Data, err = DecryptAAC(make([]byte, 0, len(p.Data)), p.Data, d.key)
	default:
		return append(dst, p), nil
	}
	if err != nil {
		return dst, fmt.Errorf("decrypt %s packet at %v: %w", p.Kind, p.DTS, err)
	}
	return append(dst, &q), nil
}
