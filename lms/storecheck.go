package lms

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/schema"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.uber.org/zap"
)

// ErrDamaged marks a store file that cannot be opened as it is: the
// embedded etcd would hang or panic on it.
var ErrDamaged = errors.New("damaged store file")

// ErrInUse: another process holds the embedded etcd's files.
var ErrInUse = errors.New("store files in use by another process")

// checkEmbeddedDir checks the files of the embedded etcd in dir before
// etcd opens them, with etcd's own packages: the bbolt backend is opened
// read-only and every bucket and key walked (a damaged page panics inside
// bbolt; here the panic is caught and reported with the file's name), and
// the WAL is read through with etcd's wal package (record checksums,
// metadata, snapshot records) from its newest snapshot record. Finally the
// WAL's entries must reach the index the backend has applied: a WAL cut
// short of it (truncated, or replaced by an older one) leaves etcd
// waiting forever for entries that are gone. A torn last record, as a
// crash leaves it, is no damage: etcd repairs it itself.
//
// A dir without member data (the first start) passes. The db's lock is
// waited for up to lockWait: a running etcd holds it.
func checkEmbeddedDir(dir string, lockWait time.Duration) error {
	member := filepath.Join(dir, "member")
	dbPath := filepath.Join(member, "snap", "db")
	walDir := filepath.Join(member, "wal")
	_, dbErr := os.Stat(dbPath)
	haveWAL := wal.Exist(walDir)
	if errors.Is(dbErr, os.ErrNotExist) && !haveWAL {
		return nil // first start, or an interrupted one: etcd creates both
	}
	var applied uint64
	if dbErr == nil {
		var err error
		if applied, err = checkBolt(dbPath, lockWait); err != nil {
			return err
		}
	}
	if !haveWAL {
		if applied == 0 {
			return nil // a first start cut short after the db was made: etcd starts afresh
		}
		return fmt.Errorf("%w: %s holds data (applied index %d) but its WAL directory %s is missing or empty",
			ErrDamaged, dbPath, applied, walDir)
	}
	return checkWAL(walDir, applied)
}

// checkBolt opens the bbolt file at path read-only, walks every bucket and
// key, and returns the raft index the backend has applied.
func checkBolt(path string, lockWait time.Duration) (applied uint64, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: etcd db %s: %v", ErrDamaged, path, p)
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: lockWait})
	if errors.Is(err, berrors.ErrTimeout) {
		return 0, fmt.Errorf("%w: etcd db %s stayed locked for %s", ErrInUse, path, lockWait)
	}
	if err != nil {
		return 0, fmt.Errorf("%w: etcd db %s: %w", ErrDamaged, path, err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		if err := tx.ForEach(func(_ []byte, b *bolt.Bucket) error { return walkBucket(b, 0) }); err != nil {
			return err
		}
		applied, _ = schema.UnsafeReadConsistentIndex(boltReader{tx})
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("%w: etcd db %s: %w", ErrDamaged, path, err)
	}
	return applied, nil
}

// maxBucketDepth bounds the nesting walkBucket follows (etcd nests none).
const maxBucketDepth = 16

// walkBucket reads every key and value of b and of its nested buckets, so
// that every page of the tree is visited once.
func walkBucket(b *bolt.Bucket, depth int) error {
	if depth > maxBucketDepth {
		return errors.New("buckets nested too deep")
	}
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v == nil {
			nb := b.Bucket(k)
			if nb == nil {
				return fmt.Errorf("key %q has neither value nor bucket", k)
			}
			if err := walkBucket(nb, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// boltReader lets etcd's schema package read single keys of a bbolt
// transaction (the only reads schema.UnsafeReadConsistentIndex makes).
type boltReader struct{ tx *bolt.Tx }

func (r boltReader) UnsafeRange(bucket backend.Bucket, key, _ []byte, _ int64) ([][]byte, [][]byte) {
	b := r.tx.Bucket(bucket.Name())
	if b == nil {
		return nil, nil
	}
	v := b.Get(key)
	if v == nil {
		return nil, nil
	}
	return [][]byte{key}, [][]byte{v}
}

func (r boltReader) UnsafeForEach(bucket backend.Bucket, visitor func(k, v []byte) error) error {
	b := r.tx.Bucket(bucket.Name())
	if b == nil {
		return nil
	}
	return b.ForEach(visitor)
}

// checkWAL reads the WAL in walDir through from its newest snapshot
// record and checks that its entries reach applied (the backend's
// consistent index). The committed index in the WAL may lag behind applied
// after a crash (etcd applies an entry before its commit is saved), so
// the last entry, not the commit, is what applied is held against.
func checkWAL(walDir string, applied uint64) (err error) {
	files := walFiles(walDir)
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: etcd WAL %s: %v", ErrDamaged, files, p)
		}
	}()
	lg := zap.NewNop()
	snaps, err := wal.ValidSnapshotEntries(lg, walDir)
	if err != nil {
		return fmt.Errorf("%w: etcd WAL %s: %w", ErrDamaged, files, err)
	}
	snap := walpb.Snapshot{}
	if len(snaps) > 0 {
		snap = snaps[len(snaps)-1]
	}
	w, err := wal.OpenForRead(lg, walDir, snap)
	if err != nil {
		return fmt.Errorf("%w: etcd WAL %s: %w", ErrDamaged, files, err)
	}
	defer w.Close()
	_, _, ents, err := w.ReadAll()
	if err != nil {
		return fmt.Errorf("%w: etcd WAL %s: %w", ErrDamaged, files, err)
	}
	last := snap.Index
	if len(ents) > 0 {
		last = ents[len(ents)-1].Index
	}
	if last < applied {
		return fmt.Errorf("%w: etcd WAL %s is truncated: its last entry is %d, but the db has applied entries up to %d",
			ErrDamaged, files, last, applied)
	}
	return nil
}

// walFiles names the WAL files of walDir for messages: the files
// themselves when there are few, else the directory.
func walFiles(walDir string) string {
	m, _ := filepath.Glob(filepath.Join(walDir, "*.wal"))
	slices.Sort(m)
	switch {
	case len(m) == 0:
		return walDir
	case len(m) > 3:
		return fmt.Sprintf("%s (%d files, the last %s)", walDir, len(m), filepath.Base(m[len(m)-1]))
	}
	return strings.Join(m, ", ")
}
