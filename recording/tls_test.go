package recording

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// writeCert writes a self-signed certificate for 127.0.0.1 as MinIO wants
// it (public.crt, private.key) and returns the certificate file.
func writeCert(t *testing.T, dir string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "livefuse test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	crt := filepath.Join(dir, "public.crt")
	os.WriteFile(crt, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(filepath.Join(dir, "private.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600)
	return crt
}

// TestS3TLS: with s3.tls and the CA in s3.ca_file the sink works over
// https; without the CA, or with TLS off, the check says what is wrong.
func TestS3TLS(t *testing.T) {
	m := &minioServer{t: t, bin: need(t, "minio"), dir: t.TempDir(), certs: t.TempDir()}
	crt := writeCert(t, m.certs)
	m.addr = "127.0.0.1:" + strconv.Itoa(freePort(t))
	m.console = "127.0.0.1:" + strconv.Itoa(freePort(t))
	m.start()
	t.Cleanup(m.stop)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	tests := []struct {
		name   string
		tls    bool
		caFile string
		want   string // "" means the bucket is created and checked
	}{
		{"tls with the CA", true, crt, ""},
		{"tls without the CA", true, "", "TLS certificate not trusted"},
		{"plain http to a TLS endpoint", false, "", "speak TLS while s3.tls is off"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := m.s3Config("vod")
			cfg.TLS, cfg.CAFile = tc.tls, tc.caFile
			s, err := NewS3Sink(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				for ctx.Err() == nil { // MinIO may still initialise
					if err = s.mc.MakeBucket(ctx, "vod", minioBucketOpts); err == nil || strings.Contains(err.Error(), "already own") {
						break
					}
					time.Sleep(200 * time.Millisecond)
				}
			}
			err = s.Check(ctx)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("check: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("check: %v, want an error with %q", err, tc.want)
			}
			if tc.want == "" {
				data := []byte("segment over TLS")
				sha, md := digests(data)
				if err := s.Put(ctx, Object{Key: "live/cam/20261201T100000Z/seg-000001.ts", Body: bytes.NewReader(data),
					Size: int64(len(data)), SHA256: sha, MD5: md, ContentType: contentTypeTS}); err != nil {
					t.Fatalf("put over TLS: %v", err)
				}
			}
			t.Logf("check: %v", err)
		})
	}
}
