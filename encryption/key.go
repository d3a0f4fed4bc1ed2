package encryption

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync/atomic"
)

// Key is one content key: AES-128 key bytes, the IV that restarts the CBC
// chain of every protected unit, and the ID players fetch the key by.
//
// The key bytes are secret: String, GoString and LogValue show the ID
// only. Use a Key through a pointer and do not change Key after it has
// been used to encrypt; the cipher built from it is cached inside.
type Key struct {
	ID  string
	Key [16]byte
	IV  [16]byte

	blk atomic.Pointer[keyBlock]
}

// keyBlock caches the AES block cipher of one key value.
type keyBlock struct {
	key [16]byte
	b   cipher.Block
}

// NewKey returns a key with random key bytes, IV and ID (32 hex digits)
// from crypto/rand.
func NewKey() (*Key, error) {
	var buf [48]byte
	if _, err := rand.Read(buf[:]); err != nil {
		return nil, fmt.Errorf("new key: %w", err)
	}
	k := &Key{ID: hex.EncodeToString(buf[32:])}
	copy(k.Key[:], buf[:16])
	copy(k.IV[:], buf[16:32])
	return k, nil
}

// block returns the AES block cipher for k.Key, built once per key value.
func (k *Key) block() cipher.Block {
	if kb := k.blk.Load(); kb != nil && kb.key == k.Key {
		return kb.b
	}
	b, err := aes.NewCipher(k.Key[:])
	if err != nil {
		// aes.NewCipher fails only for key sizes other than 16, 24 and 32.
		panic("encryption: aes.NewCipher with a 16-byte key: " + err.Error())
	}
	k.blk.Store(&keyBlock{key: k.Key, b: b})
	return b
}

// String describes the key without its secret bytes.
func (k *Key) String() string {
	if k == nil {
		return "Key(nil)"
	}
	return "Key{ID:" + k.ID + ", key:REDACTED}"
}

// GoString is String, so that %#v does not print the key bytes either.
func (k *Key) GoString() string { return k.String() }

// LogValue logs the key ID only.
func (k *Key) LogValue() slog.Value {
	if k == nil {
		return slog.StringValue("<nil>")
	}
	return slog.GroupValue(slog.String("id", k.ID), slog.String("key", "REDACTED"))
}

// IVHex returns the IV as HLS writes it: "0x" and 32 hex digits.
func (k *Key) IVHex() string { return "0x" + hex.EncodeToString(k.IV[:]) }

// clone returns a copy of k without the cached cipher.
func (k *Key) clone() *Key { return &Key{ID: k.ID, Key: k.Key, IV: k.IV} }
