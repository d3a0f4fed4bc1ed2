package recording

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// metaSHA256 is the user metadata key holding the hex SHA-256 of an object.
const metaSHA256 = "Sha256"

// S3Sink stores objects in an S3 bucket through minio-go.
type S3Sink struct {
	cfg S3Config
	mc  *minio.Client
}

// NewS3Sink builds the client; it does not contact the store (see Check).
// Empty credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
// AWS_SESSION_TOKEN, then MINIO_ACCESS_KEY / MINIO_SECRET_KEY.
func NewS3Sink(cfg S3Config) (*S3Sink, error) {
	var creds *credentials.Credentials
	if cfg.AccessKey != "" || cfg.SecretKey != "" {
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken)
	} else {
		creds = credentials.NewChainCredentials([]credentials.Provider{&credentials.EnvAWS{}, &credentials.EnvMinio{}})
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("s3 sink: ca_file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("s3 sink: ca_file %s: no PEM certificate", cfg.CAFile)
		}
		tlsConf.RootCAs = pool
	}
	tr := &http.Transport{
		TLSClientConfig:       tlsConf,
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	mc, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:     creds,
		Secure:    cfg.TLS,
		Region:    cfg.Region,
		Transport: tr,
		// The uploader retries with its own backoff; one attempt here keeps
		// an outage visible at once.
		MaxRetries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 sink %s: %w", cfg.Endpoint, err)
	}
	cfg.Prefix = strings.Trim(cfg.Prefix, "/")
	return &S3Sink{cfg: cfg, mc: mc}, nil
}

func (s *S3Sink) String() string { return "s3 " + s.cfg.Endpoint + "/" + s.cfg.Bucket }

func (s *S3Sink) key(k string) string {
	if s.cfg.Prefix == "" {
		return k
	}
	return s.cfg.Prefix + "/" + k
}

// Put uploads o and checks what the store says it received: the size,
// and the ETag, which S3 computes as the MD5 of a single-part object and
// which must equal the spooled file's MD5. Objects above PartSize go up in
// parts, each with a Content-MD5 the store checks. The SHA-256 travels as
// user metadata for later audits.
func (s *S3Sink) Put(ctx context.Context, o Object) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if _, err := o.Body.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("s3 put %s: %w", o.Key, err)
	}
	multipart := o.Size > s.cfg.PartSize
	opts := minio.PutObjectOptions{
		ContentType:    o.ContentType,
		CacheControl:   o.CacheControl,
		PartSize:       uint64(s.cfg.PartSize),
		SendContentMd5: multipart || o.MD5 == "",
	}
	if o.SHA256 != "" {
		opts.UserMetadata = map[string]string{metaSHA256: o.SHA256}
	}
	info, err := s.mc.PutObject(ctx, s.cfg.Bucket, s.key(o.Key), o.Body, o.Size, opts)
	if err != nil {
		return fmt.Errorf("s3 put %s: %w", o.Key, describeS3(err))
	}
	if info.Size != o.Size {
		return fmt.Errorf("s3 put %s: store took %d bytes, want %d", o.Key, info.Size, o.Size)
	}
	etag := strings.Trim(info.ETag, `"`)
	if !multipart && o.MD5 != "" && !strings.EqualFold(etag, o.MD5) {
		return fmt.Errorf("s3 put %s: store's ETag %s does not match the MD5 %s of the spooled bytes", o.Key, etag, o.MD5)
	}
	return nil
}

func (s *S3Sink) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	obj, err := s.mc.GetObject(ctx, s.cfg.Bucket, s.key(key), minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("s3 get %s: %w", key, describeS3(err))
	}
	if _, err := obj.Stat(); err != nil {
		obj.Close()
		return nil, fmt.Errorf("s3 get %s: %w", key, describeS3(err))
	}
	return obj, nil
}

func (s *S3Sink) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	var out []ObjectInfo
	strip := ""
	if s.cfg.Prefix != "" {
		strip = s.cfg.Prefix + "/"
	}
	for o := range s.mc.ListObjects(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: s.key(prefix), Recursive: true}) {
		if o.Err != nil {
			return nil, fmt.Errorf("s3 list %s: %w", prefix, describeS3(o.Err))
		}
		out = append(out, ObjectInfo{Key: strings.TrimPrefix(o.Key, strip), Size: o.Size, Modified: o.LastModified})
	}
	return out, nil
}

func (s *S3Sink) Delete(ctx context.Context, key string) error {
	if err := s.mc.RemoveObject(ctx, s.cfg.Bucket, s.key(key), minio.RemoveObjectOptions{}); err != nil {
		return fmt.Errorf("s3 delete %s: %w", key, describeS3(err))
	}
	return nil
}

// URL presigns a GET of key.
func (s *S3Sink) URL(ctx context.Context, key string, expiry time.Duration) (string, error) {
	u, err := s.mc.PresignedGetObject(ctx, s.cfg.Bucket, s.key(key), expiry, nil)
	if err != nil {
		return "", fmt.Errorf("s3 presign %s: %w", key, err)
	}
	return u.String(), nil
}

// Check asks whether the bucket exists, which also proves the endpoint
// answers and the credentials are accepted.
func (s *S3Sink) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ok, err := s.mc.BucketExists(ctx, s.cfg.Bucket)
	if err != nil {
		return fmt.Errorf("s3 sink %s: %w", s.cfg.Endpoint, describeS3(err))
	}
	if !ok {
		return fmt.Errorf("s3 sink %s: bucket %q does not exist", s.cfg.Endpoint, s.cfg.Bucket)
	}
	return nil
}

// describeS3 turns minio-go errors into messages an operator can act on.
func describeS3(err error) error {
	var cve *tls.CertificateVerificationError
	var uae x509.UnknownAuthorityError
	var hne x509.HostnameError
	switch {
	case errors.As(err, &cve) || errors.As(err, &uae) || errors.As(err, &hne):
		return fmt.Errorf("endpoint's TLS certificate not trusted (s3.ca_file names a CA to trust): %w", err)
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Errorf("endpoint speaks plain HTTP (s3.tls is on): %w", err)
	case strings.Contains(err.Error(), "malformed HTTP response"):
		return fmt.Errorf("endpoint speaks TLS (s3.tls is off): %w", err)
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "connection refused") {
		return fmt.Errorf("endpoint unreachable: %w", err)
	}
	er := minio.ToErrorResponse(err)
	if er.StatusCode == http.StatusBadRequest && (er.Code == "" || er.Code == "BadRequest" || strings.HasPrefix(er.Code, "400 ")) && !strings.Contains(er.Message, "bucket") {
		// What a TLS listener answers to plain HTTP (Go: "Client sent
		// an HTTP request to an HTTPS server").
		return fmt.Errorf("endpoint refused the request (400): does it speak TLS while s3.tls is off? %w", err)
	}
	switch er.Code {
	case "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken":
		return fmt.Errorf("credentials refused (%s): %w", er.Code, err)
	case "NoSuchBucket":
		return fmt.Errorf("bucket does not exist: %w", err)
	case "NoSuchKey":
		return fmt.Errorf("%w: %w", os.ErrNotExist, err)
	}
	return err
}
