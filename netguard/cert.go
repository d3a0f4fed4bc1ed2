package netguard

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// TLSConfig names a listener's certificate and key files (PEM). Both empty:
// the listener speaks plain TCP.
type TLSConfig struct {
	// CertFile is the certificate chain, leaf first.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the private key of the leaf.
	KeyFile string `yaml:"key_file"`
}

// Enabled reports whether a certificate is configured.
func (c TLSConfig) Enabled() bool { return c.CertFile != "" || c.KeyFile != "" }

// Validate checks that both files are named or neither.
func (c TLSConfig) Validate() error {
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("tls: cert_file and key_file go together")
	}
	return nil
}

// certCheckEvery is how often a handshake may look at the files again.
const certCheckEvery = 2 * time.Second

// CertSource serves a certificate from files and picks them up again when
// they change on disk (renewal by certbot, cert-manager...), without a
// restart: a handshake looks at the files' size and modification time at
// most every 2 s and reloads them when either changed. A pair that does
// not load (half written, key not matching) is logged and the previous
// certificate stays in use, so a renewal in progress never breaks
// handshakes.
type CertSource struct {
	certFile, keyFile string
	log               *slog.Logger
	every             time.Duration
	now               func() time.Time

	mu        sync.Mutex
	cert      *tls.Certificate
	certStamp fileStamp
	keyStamp  fileStamp
	checked   time.Time
}

type fileStamp struct {
	size int64
	mod  time.Time
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{size: fi.Size(), mod: fi.ModTime()}, nil
}

// NewCertSource loads the pair once; an error here is a config error.
func NewCertSource(c TLSConfig, log *slog.Logger) (*CertSource, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if !c.Enabled() {
		return nil, errors.New("tls: no cert_file and key_file")
	}
	if log == nil {
		log = slog.Default()
	}
	s := &CertSource{certFile: c.CertFile, keyFile: c.KeyFile, log: log, every: certCheckEvery, now: time.Now}
	cs, ks, err := s.stamps()
	if err != nil {
		return nil, err
	}
	cert, err := s.load()
	if err != nil {
		return nil, err
	}
	s.cert, s.certStamp, s.keyStamp, s.checked = cert, cs, ks, s.now()
	return s, nil
}

func (s *CertSource) stamps() (cert, key fileStamp, err error) {
	if cert, err = stampOf(s.certFile); err != nil {
		return cert, key, fmt.Errorf("tls cert: %w", err)
	}
	if key, err = stampOf(s.keyFile); err != nil {
		return cert, key, fmt.Errorf("tls key: %w", err)
	}
	return cert, key, nil
}

func (s *CertSource) load() (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: load %s and %s: %w", s.certFile, s.keyFile, err)
	}
	if cert.Leaf == nil && len(cert.Certificate) > 0 {
		cert.Leaf, _ = x509.ParseCertificate(cert.Certificate[0])
	}
	return &cert, nil
}

// Certificate returns the current certificate, reloading it first when
// the files changed (checked at most every 2 s).
func (s *CertSource) Certificate() *tls.Certificate {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if now.Sub(s.checked) < s.every {
		return s.cert
	}
	s.checked = now
	cs, ks, err := s.stamps()
	if err != nil {
		s.log.Warn("tls: certificate files unreadable, keeping the loaded one", "reason", err.Error())
		return s.cert
	}
	if cs == s.certStamp && ks == s.keyStamp {
		return s.cert
	}
	cert, err := s.load()
	if err != nil {
		// Keep the stamps unchanged so the next check tries again (the
		// second file of a renewal may not be written yet).
		s.log.Warn("tls: changed certificate does not load, keeping the loaded one", "reason", err.Error())
		return s.cert
	}
	s.cert, s.certStamp, s.keyStamp = cert, cs, ks
	attrs := []any{"cert_file", s.certFile}
	if cert.Leaf != nil {
		attrs = append(attrs, "subject", cert.Leaf.Subject.String(), "not_after", cert.Leaf.NotAfter.UTC())
	}
	s.log.Info("tls: certificate reloaded", attrs...)
	return s.cert
}

// GetCertificate is for tls.Config.GetCertificate.
func (s *CertSource) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.Certificate(), nil
}

// ServerConfig returns a TLS server config that takes its certificate from
// s; nextProtos are the ALPN protocols offered ("h2", "http/1.1"; none
// for RTMPS).
func (s *CertSource) ServerConfig(nextProtos ...string) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.GetCertificate,
		NextProtos:     nextProtos,
	}
}
