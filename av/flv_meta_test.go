package av

import "testing"

// TestAppendTagBodyMetaAtZero: onMetaData goes out at timestamp 0 wherever
// it sits in the stream (ffmpeg makes a data track of script data at any
// other time); other script data keeps its time.
func TestAppendTagBodyMetaAtZero(t *testing.T) {
	meta := EncodeScript("onMetaData", map[string]any{"width": 320.0})
	set := append([]byte{2, 0, 13}, "@setDataFrame"...)
	for _, tc := range []struct {
		name string
		data []byte
		want uint32
	}{
		{"onMetaData", meta, 0},
		{"@setDataFrame onMetaData", append(set, meta...), 0},
		{"onCuePoint", EncodeScript("onCuePoint", map[string]any{"name": "x"}), 9320},
		{"empty", nil, 9320},
	} {
		_, typ, ts := AppendTagBody(nil, &Packet{Kind: KindData, DTS: 9320 * 1e6, Data: tc.data})
		if typ != TagScript || ts != tc.want {
			t.Errorf("%s: tag %d at %d, want %d at %d", tc.name, typ, ts, TagScript, tc.want)
		}
	}
}
