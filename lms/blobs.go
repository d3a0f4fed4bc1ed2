package lms

import (
	"context"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Blobs are opaque values that other parts of livefuse keep in the lms
// store, so that they survive a restart and reach every node: the CDN
// session token key, for instance. (Collections of items that change at
// run time are Collections, with a watch and compare-and-swap writes.) A blob lives
// under KeyPrefix+"blobs/KIND/NAME"; lms never looks inside, and never
// logs a value (blobs may hold secrets such as signing keys).

// MaxBlob bounds a blob's size (etcd refuses requests over 1.5 MiB).
const MaxBlob = 1 << 20

func (r *Registry) blobDir(kind string) string {
	return strings.TrimSuffix(r.dir, "streams/") + "blobs/" + kind + "/"
}

func validKind(kind string) error {
	if kind == "" || len(kind) > 64 {
		return fmt.Errorf("blob kind %q: want 1 to 64 characters", kind)
	}
	for _, c := range kind {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("blob kind %q: want a-z, 0-9, '.', '-', '_'", kind)
		}
	}
	return nil
}

func (r *Registry) blobKey(kind, name string) (string, error) {
	if err := validKind(kind); err != nil {
		return "", err
	}
	if name == "" || len(name) > 256 || strings.ContainsAny(name, "/\x00") {
		return "", fmt.Errorf("blob %s name %q: want 1 to 256 bytes without '/'", kind, name)
	}
	return r.blobDir(kind) + name, nil
}

func checkBlob(kind, name string, b []byte) error {
	if len(b) > MaxBlob {
		return fmt.Errorf("blob %s/%s: %d bytes, at most %d", kind, name, len(b), MaxBlob)
	}
	return nil
}

// PutBlob stores b as kind/name, replacing what was there, and returns the
// store revision of the write.
func (r *Registry) PutBlob(ctx context.Context, kind, name string, b []byte) (int64, error) {
	k, err := r.blobKey(kind, name)
	if err != nil {
		return 0, err
	}
	if err := checkBlob(kind, name, b); err != nil {
		return 0, err
	}
	resp, err := r.cli.Put(ctx, k, string(b))
	if err != nil {
		return 0, fmt.Errorf("put blob %s/%s: %w", kind, name, err)
	}
	return resp.Header.Revision, nil
}

// CreateBlob stores b as kind/name only if there is no such blob yet (an
// atomic check, so that nodes starting together seed a value once). It
// reports whether it wrote, and the store revision.
func (r *Registry) CreateBlob(ctx context.Context, kind, name string, b []byte) (bool, int64, error) {
	k, err := r.blobKey(kind, name)
	if err != nil {
		return false, 0, err
	}
	if err := checkBlob(kind, name, b); err != nil {
		return false, 0, err
	}
	resp, err := r.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(b))).
		Commit()
	if err != nil {
		return false, 0, fmt.Errorf("create blob %s/%s: %w", kind, name, err)
	}
	return resp.Succeeded, resp.Header.Revision, nil
}

// GetBlob returns the blob kind/name and whether there is one.
func (r *Registry) GetBlob(ctx context.Context, kind, name string) ([]byte, bool, error) {
	k, err := r.blobKey(kind, name)
	if err != nil {
		return nil, false, err
	}
	resp, err := r.cli.Get(ctx, k)
	if err != nil {
		return nil, false, fmt.Errorf("read blob %s/%s: %w", kind, name, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, false, nil
	}
	return resp.Kvs[0].Value, true, nil
}

// GetBlobs returns every blob of kind by name, and the store revision of
// the read (to watch from).
func (r *Registry) GetBlobs(ctx context.Context, kind string) (map[string][]byte, int64, error) {
	m, rev, err := r.getBlobs(ctx, kind)
	if err != nil {
		return nil, 0, err
	}
	out := make(map[string][]byte, len(m))
	for name, kv := range m {
		out[name] = kv.Value
	}
	return out, rev, nil
}

func (r *Registry) getBlobs(ctx context.Context, kind string) (map[string]*mvccpb.KeyValue, int64, error) {
	if err := validKind(kind); err != nil {
		return nil, 0, err
	}
	dir := r.blobDir(kind)
	resp, err := r.cli.Get(ctx, dir, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("read blobs %s: %w", kind, err)
	}
	out := make(map[string]*mvccpb.KeyValue, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[strings.TrimPrefix(string(kv.Key), dir)] = kv
	}
	return out, resp.Header.Revision, nil
}

// DeleteBlob removes kind/name; it reports whether there was one.
func (r *Registry) DeleteBlob(ctx context.Context, kind, name string) (bool, error) {
	k, err := r.blobKey(kind, name)
	if err != nil {
		return false, err
	}
	resp, err := r.cli.Delete(ctx, k)
	if err != nil {
		return false, fmt.Errorf("delete blob %s/%s: %w", kind, name, err)
	}
	return resp.Deleted > 0, nil
}
