package origin

import (
	"bytes"
	"testing"
	"time"

	"github.com/livefuse/livefuse/av"
	"github.com/livefuse/livefuse/batchio"
)

// TestFLVOutMetaAtZero: the HTTP-FLV writer makes the same tags as
// av.AppendTag, onMetaData at timestamp 0 wherever it sits in the stream.
func TestFLVOutMetaAtZero(t *testing.T) {
	pkts := []*av.Packet{
		{Kind: av.KindData, DTS: 999 * time.Millisecond, Data: av.EncodeScript("onMetaData", map[string]any{"width": 320.0})},
		{Kind: av.KindData, DTS: 999 * time.Millisecond, Data: av.EncodeScript("onCuePoint", map[string]any{"name": "x"})},
	}
	for _, p := range pkts {
		o := &flvOut{b: batchio.NewBatch(flvHeadSize, 1<<20)}
		o.appendTag(p)
		if want := av.AppendTag(nil, p); !bytes.Equal(o.b.Head, want) {
			t.Errorf("%q: tag %x, want %x", p.Data[:13], o.b.Head[:11], want[:11])
		}
	}
	if tag := av.AppendTag(nil, pkts[0]); tag[4] != 0 || tag[5] != 0 || tag[6] != 0 || tag[7] != 0 {
		t.Errorf("onMetaData tag at %x, want timestamp 0", tag[4:8])
	}
}
