package lms

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// healthyDir makes an embedded etcd data dir with a few writes in it and
// returns its etcd directory (closed, ready to be damaged).
func healthyDir(t *testing.T) string {
	t.Helper()
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	st, err := OpenStore(t.Context(), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"a", "b", "c"} {
		if _, err := st.Client().Put(t.Context(), st.Prefix()+k, "v"); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(cfg.DataDir, "etcd")
}

func walFile(t *testing.T, dir string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "member", "wal", "*.wal"))
	if err != nil || len(m) != 1 {
		t.Fatalf("wal files: %v %v", m, err)
	}
	return m[0]
}

func overwrite(t *testing.T, path string, off int64, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	junk := make([]byte, n)
	for i := range junk {
		junk[i] = byte(0x5a + i*7)
	}
	if _, err := f.WriteAt(junk, off); err != nil {
		t.Fatal(err)
	}
}

// TestCheckEmbeddedDir: each kind of damage is reported as ErrDamaged
// naming the file, before etcd opens it; a healthy or empty dir passes.
func TestCheckEmbeddedDir(t *testing.T) {
	db := func(dir string) string { return filepath.Join(dir, "member", "snap", "db") }
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string) (file string)
	}{
		{"wal truncated", func(t *testing.T, dir string) string {
			w := walFile(t, dir)
			if err := os.Truncate(w, 100); err != nil {
				t.Fatal(err)
			}
			return w
		}},
		{"wal empty", func(t *testing.T, dir string) string {
			w := walFile(t, dir)
			if err := os.Truncate(w, 0); err != nil {
				t.Fatal(err)
			}
			return w
		}},
		{"wal record corrupt", func(t *testing.T, dir string) string {
			w := walFile(t, dir)
			overwrite(t, w, 300, 4)
			return w
		}},
		{"wal missing", func(t *testing.T, dir string) string {
			if err := os.RemoveAll(filepath.Join(dir, "member", "wal")); err != nil {
				t.Fatal(err)
			}
			return db(dir)
		}},
		{"db both meta pages", func(t *testing.T, dir string) string {
			overwrite(t, db(dir), 0, 8192)
			return db(dir)
		}},
		{"db tree pages", func(t *testing.T, dir string) string {
			overwrite(t, db(dir), 8192, 4*4096)
			return db(dir)
		}},
		{"db truncated", func(t *testing.T, dir string) string {
			if err := os.Truncate(db(dir), 5000); err != nil {
				t.Fatal(err)
			}
			return db(dir)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := healthyDir(t)
			file := tc.damage(t, dir)
			err := checkEmbeddedDir(dir, time.Second)
			if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), file) {
				t.Fatalf("got %v, want ErrDamaged naming %s", err, file)
			}
		})
	}
	t.Run("healthy", func(t *testing.T) {
		if err := checkEmbeddedDir(healthyDir(t), time.Second); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("first start", func(t *testing.T) {
		if err := checkEmbeddedDir(filepath.Join(t.TempDir(), "etcd"), time.Second); err != nil {
			t.Fatal(err)
		}
	})
}

// TestOpenStoreDamaged: OpenStore refuses a damaged dir with an error that
// names the data dir and says what to do, instead of hanging.
func TestOpenStoreDamaged(t *testing.T) {
	dir := healthyDir(t)
	if err := os.Truncate(walFile(t, dir), 100); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.DataDir = filepath.Dir(dir)
	cfg.Etcd.StartTimeout = 20 * time.Second
	_, err := OpenStore(t.Context(), cfg, testLogger(t))
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "move it aside") {
		t.Fatalf("got %v", err)
	}
}

// TestOpenStoreLocked: a db held by another process (here: a flock as a
// running etcd holds it) ends the start at the timeout, or at once when
// ctx ends, never hanging.
func TestOpenStoreLocked(t *testing.T) {
	dir := healthyDir(t)
	f, err := os.Open(filepath.Join(dir, "member", "snap", "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.DataDir = filepath.Dir(dir)
	cfg.Etcd.StartTimeout = 300 * time.Millisecond
	_, err = OpenStore(t.Context(), cfg, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), dir) {
		t.Fatalf("timeout: got %v, want an error naming %s", err, dir)
	}

	cfg.Etcd.StartTimeout = time.Hour
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(200*time.Millisecond, cancel)
	_, err = OpenStore(ctx, cfg, testLogger(t))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancel: got %v, want context.Canceled", err)
	}
}
