package encryption

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// ErrKeyNotFound is returned by a KeyStore for an unknown stream or key ID.
var ErrKeyNotFound = errors.New("encryption: key not found")

// KeyStore keeps the keys of every stream session. lms implements it on
// etcd with keys sealed by a Sealer; MemKeyStore serves tests and the
// embedded single-node default.
type KeyStore interface {
	// Get returns the key id of stream ("app/name"), or an error wrapping
	// ErrKeyNotFound.
	Get(ctx context.Context, stream, id string) (*Key, error)
	// Put stores k under stream and k.ID, replacing a key of the same ID.
	Put(ctx context.Context, stream string, k *Key) error
}

// MemKeyStore is a KeyStore in memory. The zero value is ready to use.
type MemKeyStore struct {
	mu   sync.RWMutex
	keys map[memKey]*Key
}

type memKey struct{ stream, id string }

// Get implements KeyStore.
func (s *MemKeyStore) Get(_ context.Context, stream, id string) (*Key, error) {
	s.mu.RLock()
	k, ok := s.keys[memKey{stream, id}]
	s.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("stream %s key %s: %w", stream, id, ErrKeyNotFound)
	}
	return k, nil
}

// Put implements KeyStore.
func (s *MemKeyStore) Put(_ context.Context, stream string, k *Key) error {
	if k == nil || !ValidKeyID(k.ID) {
		return errors.New("key store: key without a valid id")
	}
	s.mu.Lock()
	if s.keys == nil {
		s.keys = map[memKey]*Key{}
	}
	s.keys[memKey{stream, k.ID}] = k.clone()
	s.mu.Unlock()
	return nil
}

// Sealed key format: magic "LFK", version 1, a 12-byte nonce, then the
// AES-GCM sealing of [len(id)][id][key 16][iv 16] with the additional data
// "livefuse-key\x00" + stream, so a sealed key only opens under the stream
// it was sealed for.
const (
	sealMagic   = "LFK\x01"
	sealAADBase = "livefuse-key\x00"
)

// Sealer seals keys for storage at rest with a master key (AES-GCM) and
// opens them again. It is safe for concurrent use.
type Sealer struct {
	aead cipher.AEAD
}

// NewSealer returns a Sealer for a master key of 16, 24 or 32 bytes.
func NewSealer(master []byte) (*Sealer, error) {
	b, err := aes.NewCipher(master)
	if err != nil {
		return nil, fmt.Errorf("sealer: master key of %d bytes: %w", len(master), err)
	}
	aead, err := cipher.NewGCM(b)
	if err != nil {
		return nil, fmt.Errorf("sealer: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// ParseMasterKey decodes a master key given as 32 or 64 hex digits or as
// standard base64 of 16 or 32 bytes, as config files and environment
// variables carry it.
func ParseMasterKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if b, err := hex.DecodeString(s); err == nil && (len(b) == 16 || len(b) == 32) {
		return b, nil
	}
	if b, err := base64.StdEncoding.DecodeString(s); err == nil && (len(b) == 16 || len(b) == 32) {
		return b, nil
	}
	return nil, errors.New("master key: want 16 or 32 bytes as hex or base64")
}

// Seal returns k sealed for stream.
func (s *Sealer) Seal(stream string, k *Key) ([]byte, error) {
	if k == nil || !ValidKeyID(k.ID) {
		return nil, errors.New("seal: key without a valid id")
	}
	plain := make([]byte, 0, 1+len(k.ID)+32)
	plain = append(plain, byte(len(k.ID)))
	plain = append(plain, k.ID...)
	plain = append(plain, k.Key[:]...)
	plain = append(plain, k.IV[:]...)
	out := make([]byte, len(sealMagic)+s.aead.NonceSize(), len(sealMagic)+s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	copy(out, sealMagic)
	nonce := out[len(sealMagic):]
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	out = s.aead.Seal(out, nonce, plain, []byte(sealAADBase+stream))
	clear(plain)
	return out, nil
}

// Open returns the key sealed in b for stream. It fails for another
// stream, another master key or altered bytes.
func (s *Sealer) Open(stream string, b []byte) (*Key, error) {
	hdr := len(sealMagic) + s.aead.NonceSize()
	if len(b) < hdr || string(b[:len(sealMagic)]) != sealMagic {
		return nil, errors.New("open sealed key: not a sealed key")
	}
	plain, err := s.aead.Open(nil, b[len(sealMagic):hdr], b[hdr:], []byte(sealAADBase+stream))
	if err != nil {
		return nil, fmt.Errorf("open sealed key for %s: %w", stream, err)
	}
	defer clear(plain)
	if len(plain) < 1 || len(plain) != 1+int(plain[0])+32 {
		return nil, errors.New("open sealed key: bad length")
	}
	n := int(plain[0])
	k := &Key{ID: string(plain[1 : 1+n])}
	copy(k.Key[:], plain[1+n:])
	copy(k.IV[:], plain[1+n+16:])
	return k, nil
}
