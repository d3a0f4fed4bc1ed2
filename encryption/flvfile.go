package encryption

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// KeyLookup finds the key an onEncryption tag announces (by s.KeyID, from
// a store or fetched from s.KeyURI). The IV comes from the tag.
type KeyLookup func(s *Signal) (*Key, error)

// DecryptFLV copies the FLV stream r to w with the FLV scheme undone, at
// the byte level: onEncryption tags (and their PreviousTagSize) are
// dropped, the media tags they announce as encrypted are decrypted in
// place, and every other byte — the FLV header, tag headers, script tags,
// sequence headers, clear media — is copied as it is. So the output is,
// byte for byte, the stream the encryptor was given, as an FLV writer
// wrote it. It returns nil at a clean end of r (between tags), and stops
// at the first malformed tag or unknown key. Only whole tags are written,
// and what has been read is written before r is read again (a live
// stream is not held back in the buffer).
func DecryptFLV(w io.Writer, r io.Reader, lookup KeyLookup) error {
	if lookup == nil {
		return errors.New("decrypt flv: no key lookup")
	}
	br := bufio.NewReaderSize(r, 64<<10)
	bw := bufio.NewWriterSize(w, 64<<10)
	var hdr [13]byte
	if _, err := io.ReadFull(br, hdr[:9]); err != nil {
		return fmt.Errorf("decrypt flv: header: %w", err)
	}
	if string(hdr[:3]) != "FLV" {
		return fmt.Errorf("decrypt flv: not an FLV stream: %w", ErrMalformed)
	}
	off := binary.BigEndian.Uint32(hdr[5:9])
	if off < 9 || off > 1<<16 {
		return fmt.Errorf("decrypt flv: header size %d: %w", off, ErrMalformed)
	}
	if _, err := bw.Write(hdr[:9]); err != nil {
		return err
	}
	// The rest of the header and PreviousTagSize0.
	if _, err := io.CopyN(bw, br, int64(off-9)+4); err != nil {
		return fmt.Errorf("decrypt flv: header: %w", err)
	}
	var (
		key  *Key
		on   bool
		tag  []byte
		n    int
		err  error
		thdr [11]byte
	)
	for ; ; n++ {
		// The tags decrypted so far go out before waiting for more
		// input: a live stream's tags are not held back, while a file is
		// still copied in large writes.
		if bw.Buffered() > 0 && !wholeTagBuffered(br) {
			if err := bw.Flush(); err != nil {
				return err
			}
		}
		if _, err = io.ReadFull(br, thdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return bw.Flush()
			}
			_ = bw.Flush()
			return fmt.Errorf("decrypt flv: tag %d: %w", n, err)
		}
		size := int(thdr[1])<<16 | int(thdr[2])<<8 | int(thdr[3])
		if cap(tag) < size+4 {
			tag = make([]byte, size+4)
		}
		tag = tag[:size+4]
		if _, err = io.ReadFull(br, tag); err != nil {
			_ = bw.Flush()
			return fmt.Errorf("decrypt flv: tag %d body: %w", n, err)
		}
		body := tag[:size]
		switch thdr[0] & 0x1f {
		case 18:
			if IsSignal(body) {
				s, err := ParseSignal(body)
				if err != nil {
					_ = bw.Flush()
					return fmt.Errorf("decrypt flv: tag %d: %w", n, err)
				}
				if on = s.Encrypted; on && (key == nil || key.ID != s.KeyID || key.IV != s.IV) {
					k, err := lookup(s)
					if err != nil {
						_ = bw.Flush()
						return fmt.Errorf("decrypt flv: tag %d: key %s: %w", n, s.KeyID, err)
					}
					if k == nil {
						_ = bw.Flush()
						return fmt.Errorf("decrypt flv: tag %d: key %s: lookup gave no key", n, s.KeyID)
					}
					key = &Key{ID: s.KeyID, Key: k.Key, IV: s.IV}
				}
				continue // the clear stream has no onEncryption tags
			}
		case 9:
			if on && size > 5 && body[0]&0x0f == 7 && body[1] == 1 {
				if _, err := DecryptAVCC(body[5:5], body[5:], key); err != nil {
					_ = bw.Flush()
					return fmt.Errorf("decrypt flv: tag %d: %w", n, err)
				}
			}
		case 8:
			if on && size > 2 && body[0]>>4 == 10 && body[1] == 1 {
				_, _ = DecryptAAC(body[2:2], body[2:], key) // fails only without a key
			}
		}
		if _, err := bw.Write(thdr[:]); err != nil {
			return err
		}
		if _, err := bw.Write(tag); err != nil {
			return err
		}
	}
}

// wholeTagBuffered reports whether br holds the next tag and its
// PreviousTagSize entirely, so that reading it does not wait for input.
func wholeTagBuffered(br *bufio.Reader) bool {
	n := br.Buffered()
	if n < 11 {
		return false
	}
	h, err := br.Peek(11)
	if err != nil {
		return false
	}
	size := int(h[1])<<16 | int(h[2])<<8 | int(h[3])
	return n >= 11+size+4
}
