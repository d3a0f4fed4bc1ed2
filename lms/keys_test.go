package lms

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"
)

func TestKeyBlobs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := prefixStore(t)
	k := NewKeyBlobs(s)
	if err := k.Put(ctx, "live/a", "k1", []byte("sealed-1")); err != nil {
		t.Fatal(err)
	}
	if err := k.Put(ctx, "live/a", "k2", []byte("sealed-2")); err != nil {
		t.Fatal(err)
	}
	if err := k.Put(ctx, "live/ab", "k1", []byte("other")); err != nil {
		t.Fatal(err)
	}
	// Another node (another KeyBlobs on the same etcd) reads what this one wrote.
	other := NewKeyBlobs(s)
	if b, err := other.Get(ctx, "live/a", "k2"); err != nil || !bytes.Equal(b, []byte("sealed-2")) {
		t.Fatalf("Get: %q, %v", b, err)
	}
	for _, tc := range []struct{ stream, id string }{
		{"live/a", "nope"}, {"live/b", "k1"}, {"live", "k1"}, {"live/a/b", "k1"}, {"live/a", ""}, {"live/a", "../x"},
	} {
		if _, err := k.Get(ctx, tc.stream, tc.id); !errors.Is(err, ErrKeyNotFound) {
			t.Errorf("Get(%q, %q): %v, want ErrKeyNotFound", tc.stream, tc.id, err)
		}
	}
	for _, blob := range [][]byte{nil, make([]byte, maxKeyBlob+1)} {
		if err := k.Put(ctx, "live/a", "k3", blob); err == nil {
			t.Errorf("Put of %d bytes accepted", len(blob))
		}
	}
	if err := k.DeleteStream(ctx, "live/a"); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Get(ctx, "live/a", "k1"); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("after DeleteStream: %v", err)
	}
	if b, err := k.Get(ctx, "live/ab", "k1"); err != nil || string(b) != "other" {
		t.Errorf("DeleteStream of live/a removed live/ab's key: %q, %v", b, err)
	}
}
