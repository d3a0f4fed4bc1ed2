package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
	"github.com/livefuse/livefuse/encryption"
)

// encryptedFLV returns a clear FLV of synthetic H.264+AAC and the same
// stream through the Encryptor (with encryption off for a while), and the
// key store.
func encryptedFLV(t *testing.T) (clear, enc []byte, ks *encryption.MemKeyStore) {
	t.Helper()
	sps := []byte{0x67, 0x42, 0xc0, 0x0c, 0xda, 0x05, 0x06, 0x7e, 0x7c, 0x04, 0x40}
	cfg, err := av.BuildAVCConfig(sps, []byte{0x68, 0xce, 0x0f, 0xc8})
	if err != nil {
		t.Fatal(err)
	}
	ps := []*av.Packet{
		{Kind: av.KindVideo, Codec: av.CodecH264, Header: true, Key: true, Data: cfg.Marshal()},
		{Kind: av.KindAudio, Codec: av.CodecAAC, Header: true, Data: []byte{0x12, 0x10}},
	}
	for i := range 100 {
		nal := bytes.Repeat([]byte{byte(i), 0x5a, 0}, 150)
		nal[0] = 0x41
		if i%25 == 0 {
			nal[0] = 0x65
		}
		ps = append(ps,
			&av.Packet{Kind: av.KindVideo, Codec: av.CodecH264, Key: i%25 == 0, DTS: time.Duration(i) * 40 * time.Millisecond, Data: av.AppendAVCC(nil, [][]byte{nal})},
			&av.Packet{Kind: av.KindAudio, Codec: av.CodecAAC, DTS: time.Duration(i) * 40 * time.Millisecond, Data: bytes.Repeat([]byte{byte(i), 7}, 90)})
	}
	ks = &encryption.MemKeyStore{}
	k, _ := encryption.NewKey()
	_ = ks.Put(context.Background(), "live/x", k)
	e, err := encryption.NewEncryptor(encryption.EncryptorConfig{Stream: "live/x", Key: k, Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
	clear, enc = av.FLVHeader(true, true), av.FLVHeader(true, true)
	var out []*av.Packet
	for i, p := range ps {
		switch i {
		case 60:
			e.SetEnabled(false)
		case 110:
			e.SetEnabled(true)
		}
		clear = av.AppendTag(clear, p)
		if out, err = e.Encrypt(out[:0], p); err != nil {
			t.Fatal(err)
		}
		for _, q := range out {
			enc = av.AppendTag(enc, q)
		}
	}
	return clear, enc, ks
}

func TestDecrypt(t *testing.T) {
	clear, enc, ks := encryptedFLV(t)
	mux := http.NewServeMux()
	mux.HandleFunc("/keys/live/x/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("auth_key") != "tok" {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		k, err := ks.Get(r.Context(), "live/x", r.PathValue("id"))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		w.Write(k.Key[:])
	})
	mux.HandleFunc("/live/x.flv", func(w http.ResponseWriter, r *http.Request) { w.Write(enc) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	dir := t.TempDir()
	in := filepath.Join(dir, "enc.flv")
	if err := os.WriteFile(in, enc, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		code int
	}{
		{"file", []string{"--keys", srv.URL, "--auth-key", "tok", in}, 0},
		{"url", []string{srv.URL + "/live/x.flv?auth_key=tok"}, 0},
		{"no-token", []string{srv.URL + "/live/x.flv"}, 1},
		{"file-without-keys", []string{in}, 1},
		{"usage", []string{}, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, tc.name+".flv")
			var stderr bytes.Buffer
			code := decrypt(context.Background(), append([]string{"-o", out}, tc.args...), &bytes.Buffer{}, &stderr)
			if code != tc.code {
				t.Fatalf("exit %d, want %d: %s", code, tc.code, stderr.String())
			}
			if code != 0 {
				return
			}
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, clear) {
				t.Fatalf("decrypted %d bytes, not the clear %d bytes", len(got), len(clear))
			}
		})
	}
	// The whole command line, stdout output.
	var stdout, stderr bytes.Buffer
	if code := run([]string{"decrypt", srv.URL + "/live/x.flv?auth_key=tok"}, func(string) string { return "" }, &stdout, &stderr); code != 0 || !bytes.Equal(stdout.Bytes(), clear) {
		t.Fatalf("run decrypt: exit %d, %d bytes: %s", code, stdout.Len(), stderr.String())
	}
	if !strings.Contains(decryptUsage, "byte for byte") {
		t.Fatal("usage text")
	}
}
