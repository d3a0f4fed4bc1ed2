package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/livefuse/livefuse/encryption"
)

const decryptUsage = `usage: livectl decrypt [-o FILE] [--auth-key T] [--keys URL] [--key HEX] INPUT

Turns an encrypted FLV (livefuse-flv-sample-aes, encryption/FLV.md) into
the clear FLV, byte for byte. INPUT is a file, "-" (stdin) or an http(s)
URL of a live stream (read until it ends or livectl is interrupted).
Keys are fetched from the key URI in each onEncryption tag, resolved
against the stream URL or --keys (the origin's base URL, for files), with
the play token (--auth-key, or the stream URL's auth_key) appended;
--key gives the 16 key bytes (32 hex digits) instead.
`

// decrypt runs `livectl decrypt`.
func decrypt(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("decrypt", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	outPath := fs.String("o", "-", "output file (- for stdout)")
	authKey := fs.String("auth-key", "", "play token for key requests")
	keysBase := fs.String("keys", "", "base URL key URIs resolve against (for files)")
	keyHex := fs.String("key", "", "the content key, 32 hex digits")
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" {
			fmt.Fprint(stdout, decryptUsage)
			return 0
		}
	}
	pos, err := parse(fs, args)
	if err != nil || len(pos) != 1 {
		fmt.Fprint(stderr, decryptUsage)
		return 2
	}
	in, base, err := openInput(ctx, pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "livectl decrypt: %v\n", err)
		return 1
	}
	defer in.Close()
	if *keysBase != "" {
		if base, err = url.Parse(*keysBase); err != nil {
			fmt.Fprintf(stderr, "livectl decrypt: --keys: %v\n", err)
			return 2
		}
	}
	if *authKey == "" && base != nil {
		*authKey = base.Query().Get("auth_key")
	}
	lookup, err := keyLookup(ctx, *keyHex, base, *authKey)
	if err != nil {
		fmt.Fprintf(stderr, "livectl decrypt: %v\n", err)
		return 2
	}
	var out io.Writer = stdout
	if *outPath != "-" {
		f, err := os.Create(*outPath)
		if err != nil {
			fmt.Fprintf(stderr, "livectl decrypt: %v\n", err)
			return 1
		}
		defer f.Close()
		out = f
	}
	if err := encryption.DecryptFLV(out, in, lookup); err != nil && ctx.Err() == nil {
		fmt.Fprintf(stderr, "livectl decrypt: %v\n", err)
		return 1
	}
	return 0
}

// openInput opens a file, stdin or a stream URL; base is the URL key URIs
// resolve against (nil for files and stdin).
func openInput(ctx context.Context, in string) (io.ReadCloser, *url.URL, error) {
	switch {
	case in == "-":
		return io.NopCloser(os.Stdin), nil, nil
	case strings.HasPrefix(in, "http://") || strings.HasPrefix(in, "https://"):
		u, err := url.Parse(in)
		if err != nil {
			return nil, nil, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, in, nil)
		if err != nil {
			return nil, nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, nil, err
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return nil, nil, fmt.Errorf("GET %s: %s", u.Redacted(), resp.Status)
		}
		return resp.Body, u, nil
	default:
		f, err := os.Open(in)
		return f, nil, err
	}
}

// keyLookup returns how keys are found: the one --key, or GET on the key
// URI (resolved against base) with the play token.
func keyLookup(ctx context.Context, keyHex string, base *url.URL, authKey string) (encryption.KeyLookup, error) {
	if keyHex != "" {
		b, err := hex.DecodeString(keyHex)
		if err != nil || len(b) != 16 {
			return nil, errors.New("--key: want 32 hex digits")
		}
		k := &encryption.Key{}
		copy(k.Key[:], b)
		return func(*encryption.Signal) (*encryption.Key, error) { return k, nil }, nil
	}
	client := &http.Client{Timeout: 10 * time.Second}
	return func(s *encryption.Signal) (*encryption.Key, error) {
		ref, err := url.Parse(s.KeyURI)
		if err != nil || s.KeyURI == "" {
			return nil, fmt.Errorf("key uri %q unusable", s.KeyURI)
		}
		if base == nil && !ref.IsAbs() {
			return nil, fmt.Errorf("key uri %s is relative: give --keys or --key", s.KeyURI)
		}
		u := ref
		if base != nil {
			u = base.ResolveReference(ref)
		}
		if authKey != "" {
			q := u.Query()
			q.Set("auth_key", authKey)
			u.RawQuery = q.Encode()
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("key %s: %s", s.KeyID, resp.Status)
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 17))
		if err != nil {
			return nil, err
		}
		if len(b) != 16 {
			return nil, fmt.Errorf("key %s: %d bytes, want 16", s.KeyID, len(b))
		}
		k := &encryption.Key{ID: s.KeyID}
		copy(k.Key[:], b)
		return k, nil
	}, nil
}
