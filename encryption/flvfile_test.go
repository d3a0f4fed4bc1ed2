package encryption

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/livefuse/livefuse/av"
)

// encryptAll runs ps through an Encryptor, calling at(enc, i) before
// packet i, and returns the FLV bytes of the clear and encrypted streams.
func encryptAll(t testing.TB, ps []*av.Packet, ks *MemKeyStore, at func(e *Encryptor, i int)) (clear, enc []byte) {
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := ks.Put(context.Background(), "live/x", k); err != nil {
		t.Fatal(err)
	}
	e, err := NewEncryptor(EncryptorConfig{Stream: "live/x", Key: k, Enabled: true, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	clear, enc = av.FLVHeader(true, true), av.FLVHeader(true, true)
	var out []*av.Packet
	for i, p := range ps {
		if at != nil {
			at(e, i)
		}
		clear = av.AppendTag(clear, p)
		out, err = e.Encrypt(out[:0], p)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range out {
			enc = av.AppendTag(enc, q)
		}
	}
	return clear, enc
}

func storeLookup(ks *MemKeyStore) KeyLookup {
	return func(s *Signal) (*Key, error) { return ks.Get(context.Background(), "live/x", s.KeyID) }
}

// TestDecryptFLV: DecryptFLV gives back the clear FLV byte for byte,
// through encryption turned off and on again and a key rotation.
func TestDecryptFLV(t *testing.T) {
	ps := synth(8, 25)
	ks := &MemKeyStore{}
	k2, _ := NewKey()
	_ = ks.Put(context.Background(), "live/x", k2)
	clear, enc := encryptAll(t, ps, ks, func(e *Encryptor, i int) {
		switch i {
		case 60: // in GOP 1: off from GOP 2
			e.SetEnabled(false)
		case 160: // on again from GOP 4
			e.SetEnabled(true)
		case 260: // a new key from GOP 6
			e.SetKey(k2)
		}
	})
	if len(enc) <= len(clear) || bytes.Equal(enc[len(enc)-len(clear):], clear) {
		t.Fatal("nothing was encrypted")
	}
	var got bytes.Buffer
	if err := DecryptFLV(&got, bytes.NewReader(enc), storeLookup(ks)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), clear) {
		t.Fatalf("decrypted FLV (%d bytes) differs from the clear one (%d bytes)", got.Len(), len(clear))
	}
	// Truncated streams and unknown keys are errors, never panics.
	if err := DecryptFLV(&bytes.Buffer{}, bytes.NewReader(enc[:len(enc)-7]), storeLookup(ks)); err == nil {
		t.Error("truncated stream: no error")
	}
	empty := &MemKeyStore{}
	if err := DecryptFLV(&bytes.Buffer{}, bytes.NewReader(enc), storeLookup(empty)); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("unknown key: %v", err)
	}
	if err := DecryptFLV(&bytes.Buffer{}, bytes.NewReader([]byte("FLX\x01\x05\x00\x00\x00\x09")), storeLookup(ks)); !errors.Is(err, ErrMalformed) {
		t.Errorf("not FLV: %v", err)
	}
}

func FuzzDecryptFLV(f *testing.F) {
	ks := &MemKeyStore{}
	_, enc := encryptAll(f, synth(2, 5), ks, nil)
	f.Add(enc)
	f.Add(enc[:100])
	f.Add([]byte("FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var out bytes.Buffer
		_ = DecryptFLV(&out, bytes.NewReader(b), storeLookup(ks))
		if out.Len() > len(b) {
			t.Fatalf("output %d bytes from %d", out.Len(), len(b))
		}
	})
}
