package lms

import (
	"strings"
	"testing"
)

func TestBlobs(t *testing.T) {
	st := prefixStore(t)
	r := startRegistry(t, st)
	ctx := t.Context()

	if _, ok, err := r.GetBlob(ctx, "cdnmix", "vendors"); err != nil || ok {
		t.Fatalf("GetBlob of nothing: ok %v, err %v", ok, err)
	}
	created, rev1, err := r.CreateBlob(ctx, "cdnmix", "vendors", []byte(`[1]`))
	if err != nil || !created || rev1 == 0 {
		t.Fatalf("CreateBlob: created %v rev %d err %v", created, rev1, err)
	}
	if created, _, err := r.CreateBlob(ctx, "cdnmix", "vendors", []byte(`[2]`)); err != nil || created {
		t.Fatalf("CreateBlob over a blob: created %v, err %v", created, err)
	}
	if b, ok, err := r.GetBlob(ctx, "cdnmix", "vendors"); err != nil || !ok || string(b) != `[1]` {
		t.Fatalf("GetBlob after a refused create: %q %v %v", b, ok, err)
	}
	rev2, err := r.PutBlob(ctx, "cdnmix", "vendors", []byte(`[3]`))
	if err != nil || rev2 <= rev1 {
		t.Fatalf("PutBlob: rev %d (after %d), err %v", rev2, rev1, err)
	}
	if _, err := r.PutBlob(ctx, "cdnmix", "other", nil); err != nil {
		t.Fatalf("PutBlob of an empty value: %v", err)
	}
	// Another kind whose name extends this one stays apart.
	if _, err := r.PutBlob(ctx, "cdnmixer", "vendors", []byte("x")); err != nil {
		t.Fatal(err)
	}
	all, rev, err := r.GetBlobs(ctx, "cdnmix")
	if err != nil || len(all) != 2 || string(all["vendors"]) != `[3]` || len(all["other"]) != 0 || rev < rev2 {
		t.Fatalf("GetBlobs: %q rev %d err %v", all, rev, err)
	}
	if ok, err := r.DeleteBlob(ctx, "cdnmix", "other"); err != nil || !ok {
		t.Fatalf("DeleteBlob: %v %v", ok, err)
	}
	if ok, err := r.DeleteBlob(ctx, "cdnmix", "other"); err != nil || ok {
		t.Fatalf("DeleteBlob again: %v %v", ok, err)
	}
	// Blobs are not streams.
	if r.Len() != 0 {
		t.Errorf("registry has %d streams", r.Len())
	}

	for _, tc := range []struct {
		name, kind, blob string
		size             int
	}{
		{"empty kind", "", "x", 1},
		{"kind with slash", "a/b", "x", 1},
		{"upper case kind", "CDN", "x", 1},
		{"empty name", "k", "", 1},
		{"name with slash", "k", "a/b", 1},
		{"long name", "k", strings.Repeat("n", 257), 1},
		{"too large", "k", "x", MaxBlob + 1},
	} {
		if _, err := r.PutBlob(ctx, tc.kind, tc.blob, make([]byte, tc.size)); err == nil {
			t.Errorf("%s: PutBlob accepted it", tc.name)
		}
		if _, _, err := r.CreateBlob(ctx, tc.kind, tc.blob, make([]byte, tc.size)); err == nil {
			t.Errorf("%s: CreateBlob accepted it", tc.name)
		}
	}
	if _, _, err := r.GetBlobs(ctx, "a/b"); err == nil {
		t.Error("GetBlobs accepted a bad kind")
	}
}
