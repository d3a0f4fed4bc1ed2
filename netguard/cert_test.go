package netguard

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writePair writes a self-signed certificate for cn and its key.
func writePair(t *testing.T, certFile, keyFile, cn string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     []string{cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func cnOf(c *tls.Certificate) string {
	if c == nil || c.Leaf == nil {
		return ""
	}
	return c.Leaf.Subject.CommonName
}

func TestCertSourceReload(t *testing.T) {
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writePair(t, cf, kf, "one.test")
	s, err := NewCertSource(TLSConfig{CertFile: cf, KeyFile: kf}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	s.now = func() time.Time { return clock }
	mtime := time.Now()
	touch := func(path string) {
		mtime = mtime.Add(time.Second) // distinct mtimes whatever the file system's resolution
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}

	steps := []struct {
		name    string
		change  func()
		advance time.Duration
		want    string
	}{
		{"initial", func() {}, 0, "one.test"},
		{"renewed, not yet looked at", func() { writePair(t, cf, kf, "two.test"); touch(cf); touch(kf) }, 0, "one.test"},
		{"renewed, looked at", func() {}, certCheckEvery, "two.test"},
		{"half written: old one stays", func() { os.WriteFile(cf, []byte("-----BEGIN CERT"), 0o600); touch(cf) }, certCheckEvery, "two.test"},
		{"completed: picked up", func() { writePair(t, cf, kf, "three.test"); touch(cf); touch(kf) }, certCheckEvery, "three.test"},
		{"files gone: old one stays", func() { os.Remove(cf) }, certCheckEvery, "three.test"},
	}
	for _, st := range steps {
		st.change()
		clock = clock.Add(st.advance)
		got, err := s.GetCertificate(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if cnOf(got) != st.want {
			t.Fatalf("%s: serving %q, want %q", st.name, cnOf(got), st.want)
		}
	}
}

func TestCertSourceConfigErrors(t *testing.T) {
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writePair(t, cf, kf, "x.test")
	other := filepath.Join(dir, "other-key.pem")
	writePair(t, filepath.Join(dir, "other.pem"), other, "y.test")
	for _, c := range []struct {
		name string
		cfg  TLSConfig
	}{
		{"cert without key", TLSConfig{CertFile: cf}},
		{"missing file", TLSConfig{CertFile: cf, KeyFile: filepath.Join(dir, "nope.pem")}},
		{"key of another cert", TLSConfig{CertFile: cf, KeyFile: other}},
		{"none", TLSConfig{}},
	} {
		if _, err := NewCertSource(c.cfg, quiet()); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
}
