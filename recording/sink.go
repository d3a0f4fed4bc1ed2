package recording

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Content types of the objects a session is made of.
const (
	contentTypeTS       = "video/mp2t"
	contentTypePlaylist = "application/vnd.apple.mpegurl"
	contentTypeJSON     = "application/json"
)

// Object is what a sink stores: a key relative to the sink root
// (APP/NAME/SESSION/FILE) and its body with known size and digests.
type Object struct {
	Key          string
	Body         io.ReadSeeker
	Size         int64
	SHA256, MD5  string // hex
	ContentType  string
	CacheControl string
}

// ObjectInfo is one listed object.
type ObjectInfo struct {
	Key      string
	Size     int64
	Modified time.Time
}

// Sink is a store for finished segments and playlists.
type Sink interface {
	// Put stores o and returns only once the store confirmed the bytes
	// (size and checksum).
	Put(ctx context.Context, o Object) error
	// Get opens a stored object; the error wraps os.ErrNotExist when it is
	// not there.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// List returns the objects under prefix, sorted by key.
	List(ctx context.Context, prefix string) ([]ObjectInfo, error)
	// Delete removes an object (no error when it is not there).
	Delete(ctx context.Context, key string) error
	// URL returns a time-limited URL for key, or "" when the node serves
	// the object itself.
	URL(ctx context.Context, key string, expiry time.Duration) (string, error)
	// Check reports whether the store is usable, with a message an
	// operator can act on.
	Check(ctx context.Context) error
	// String names the sink for logs ("local /data/recordings", "s3 host/bucket").
	String() string
}

// LocalSink stores objects under a directory.
type LocalSink struct {
	dir string
}

// NewLocalSink returns a sink writing under dir (created when missing).
func NewLocalSink(dir string) (*LocalSink, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("local sink: %w", err)
	}
	return &LocalSink{dir: dir}, nil
}

func (s *LocalSink) String() string { return "local " + s.dir }

// path maps a key to a file, refusing keys that leave the directory.
func (s *LocalSink) path(key string) (string, error) {
	clean := path.Clean("/" + key)
	if clean == "/" || clean != "/"+key || strings.Contains(key, "\\") {
		return "", fmt.Errorf("local sink: bad key %q", key)
	}
	return filepath.Join(s.dir, filepath.FromSlash(clean[1:])), nil
}

// Put writes o to a temporary file, syncs it, checks its digests by reading
// it back, and renames it into place.
func (s *LocalSink) Put(ctx context.Context, o Object) error {
	p, err := s.path(o.Key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("local sink put %s: %w", o.Key, err)
	}
	if _, err := o.Body.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("local sink put %s: %w", o.Key, err)
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".put-*")
	if err != nil {
		return fmt.Errorf("local sink put %s: %w", o.Key, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = io.Copy(f, ctxReader{ctx, o.Body})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("local sink put %s: %w", o.Key, err)
	}
	if err := verifyFile(tmp, o); err != nil {
		return fmt.Errorf("local sink put %s: %w", o.Key, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("local sink put %s: %w", o.Key, err)
	}
	return nil
}

// verifyFile checks size and SHA-256 (when given) of a written file.
func verifyFile(name string, o Object) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return err
	}
	if n != o.Size {
		return fmt.Errorf("stored %d bytes, want %d", n, o.Size)
	}
	if o.SHA256 != "" && hex.EncodeToString(h.Sum(nil)) != o.SHA256 {
		return errors.New("stored bytes do not match the SHA-256")
	}
	return nil
}

func (s *LocalSink) Get(_ context.Context, key string) (io.ReadCloser, error) {
	p, err := s.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("local sink get %s: %w", key, err)
	}
	return f, nil
}

func (s *LocalSink) List(_ context.Context, prefix string) ([]ObjectInfo, error) {
	var out []ObjectInfo
	err := filepath.WalkDir(s.dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() || strings.HasPrefix(d.Name(), ".") {
			return nil
		}
		rel, err := filepath.Rel(s.dir, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil // removed meanwhile
		}
		out = append(out, ObjectInfo{Key: key, Size: fi.Size(), Modified: fi.ModTime()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("local sink list %s: %w", prefix, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (s *LocalSink) Delete(_ context.Context, key string) error {
	p, err := s.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("local sink delete %s: %w", key, err)
	}
	// Drop directories left empty (session, then stream, then app).
	for d := filepath.Dir(p); d != s.dir && strings.HasPrefix(d, s.dir); d = filepath.Dir(d) {
		if os.Remove(d) != nil {
			break
		}
	}
	return nil
}

// URL is "": the node serves local recordings itself.
func (s *LocalSink) URL(context.Context, string, time.Duration) (string, error) { return "", nil }

func (s *LocalSink) Check(context.Context) error {
	f, err := os.CreateTemp(s.dir, ".check-*")
	if err != nil {
		return fmt.Errorf("local sink %s is not writable: %w", s.dir, err)
	}
	f.Close()
	os.Remove(f.Name())
	return nil
}

// ctxReader stops a copy when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// digests returns the hex SHA-256 and MD5 of b.
func digests(b []byte) (sha, md string) {
	s := sha256.Sum256(b)
	m := md5.Sum(b)
	return hex.EncodeToString(s[:]), hex.EncodeToString(m[:])
}
