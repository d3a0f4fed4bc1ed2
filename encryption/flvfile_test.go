package encryption

import (
	"bytes"
	"context"
	"errors"
	"io"
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

// chunkReader gives its data in chunks of the given sizes (then the rest),
// calling before(consumed) ahead of every read.
type chunkReader struct {
	data   []byte
	sizes  []int
	off    int
	before func(consumed int)
}

func (r *chunkReader) Read(p []byte) (int, error) {
	r.before(r.off)
	if r.off == len(r.data) {
		return 0, io.EOF
	}
	n := len(r.data) - r.off
	if len(r.sizes) > 0 {
		n, r.sizes = min(n, r.sizes[0]), r.sizes[1:]
	}
	n = copy(p, r.data[r.off:r.off+n])
	r.off += n
	return n, nil
}

// TestDecryptFLVLive: reading a live stream, DecryptFLV has written every
// whole tag it was given whenever it waits for more input, and only whole
// tags: a player piping livectl into a decoder is not held back, and a
// stopped livectl leaves no cut tag.
func TestDecryptFLVLive(t *testing.T) {
	ps := synth(6, 25)
	ks := &MemKeyStore{}
	clear, enc := encryptAll(t, ps, ks, func(e *Encryptor, i int) {
		if i == 70 || i == 200 {
			e.SetEnabled(i == 200)
		}
	})
	// The clear output due once the first x input bytes are in: the FLV
	// header, then each whole tag (onEncryption tags give nothing).
	type mark struct{ in, out int }
	marks := []mark{{13, 13}}
	for in, out := 13, 13; in < len(enc); {
		size := int(enc[in+1])<<16 | int(enc[in+2])<<8 | int(enc[in+3])
		if !(enc[in]&0x1f == 18 && IsSignal(enc[in+11:in+11+size])) {
			out += 11 + size + 4
		}
		in += 11 + size + 4
		marks = append(marks, mark{in, out})
	}
	if marks[len(marks)-1].out != len(clear) {
		t.Fatalf("marks end at %d, clear FLV has %d bytes", marks[len(marks)-1].out, len(clear))
	}
	for _, step := range []int{1, 7, 100, 333, 1000, 4096, 70000} {
		var out bytes.Buffer
		var sizes []int
		for n := 0; n < len(enc); n += step {
			sizes = append(sizes, step)
		}
		r := &chunkReader{data: enc, sizes: sizes, before: func(consumed int) {
			due := 0
			for _, m := range marks {
				if m.in <= consumed {
					due = m.out
				}
			}
			if out.Len() != due || !bytes.Equal(out.Bytes(), clear[:due]) {
				t.Fatalf("chunks of %d: waiting for input after %d bytes in, %d bytes out, want the clear FLV's first %d", step, consumed, out.Len(), due)
			}
		}}
		if err := DecryptFLV(&out, r, storeLookup(ks)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), clear) {
			t.Fatalf("chunks of %d: the decrypted FLV differs", step)
		}
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
