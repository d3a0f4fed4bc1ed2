package lms

import (
	"context"
	"errors"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/livefuse/livefuse/lms/api"
)

// ErrKeyNotFound is returned by KeyBlobs.Get for an unknown key.
var ErrKeyNotFound = errors.New("content key not found")

// maxKeyBlob bounds a stored blob; sealed content keys are under 100 bytes.
const maxKeyBlob = 4096

// KeyBlobs keeps the content keys of stream sessions in etcd, under
// <prefix>keys/<app>/<name>/<id>, so that every node of the cluster can
// deliver a key any node made. The blobs are opaque: the caller seals them
// (the encryption package's Sealer, with the master key) before Put and
// opens them after Get, so etcd never holds a key in the clear and lms
// never sees one. Blob values are never logged.
type KeyBlobs struct {
	cli *clientv3.Client
	dir string
}

// NewKeyBlobs returns the key blob store on s.
func NewKeyBlobs(s *Store) *KeyBlobs {
	return &KeyBlobs{cli: s.cli, dir: s.prefix + "keys/"}
}

func (k *KeyBlobs) key(stream, id string) (string, error) {
	app, name, ok := strings.Cut(stream, "/")
	if !ok || api.ValidateName(app) != nil || api.ValidateName(name) != nil {
		return "", fmt.Errorf("content key: bad stream %q", stream)
	}
	if id == "" || len(id) > 128 || strings.ContainsAny(id, "/\x00") {
		return "", fmt.Errorf("content key of %s: bad key id", stream)
	}
	return k.dir + stream + "/" + id, nil
}

// Put stores blob as key id of stream ("app/name"), replacing a blob of
// the same id.
func (k *KeyBlobs) Put(ctx context.Context, stream, id string, blob []byte) error {
	key, err := k.key(stream, id)
	if err != nil {
		return err
	}
	if len(blob) == 0 || len(blob) > maxKeyBlob {
		return fmt.Errorf("content key %s of %s: blob of %d bytes", id, stream, len(blob))
	}
	if _, err := k.cli.Put(ctx, key, string(blob)); err != nil {
		return fmt.Errorf("store content key %s of %s: %w", id, stream, err)
	}
	return nil
}

// Get returns the blob of key id of stream, or an error wrapping
// ErrKeyNotFound.
func (k *KeyBlobs) Get(ctx context.Context, stream, id string) ([]byte, error) {
	key, err := k.key(stream, id)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyNotFound, err)
	}
	resp, err := k.cli.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("read content key %s of %s: %w", id, stream, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("content key %s of %s: %w", id, stream, ErrKeyNotFound)
	}
	return resp.Kvs[0].Value, nil
}

// DeleteStream removes every key of stream (when the stream is deleted).
func (k *KeyBlobs) DeleteStream(ctx context.Context, stream string) error {
	key, err := k.key(stream, "x")
	if err != nil {
		return err
	}
	if _, err := k.cli.Delete(ctx, strings.TrimSuffix(key, "x"), clientv3.WithPrefix()); err != nil {
		return fmt.Errorf("delete content keys of %s: %w", stream, err)
	}
	return nil
}
