package cdnmix

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/livefuse/livefuse/bus"
)

// FuzzDecodeBeaconFast: whatever the fast decoder accepts, encoding/json
// accepts too and decodes to the same beacon.
func FuzzDecodeBeaconFast(f *testing.F) {
	b, _ := json.Marshal(bus.Beacon{Session: "s1", Stream: "live/demo", Vendor: "v1", Event: "heartbeat",
		Time: time.Unix(1_800_000_000, 123456789).UTC(), BufferEmptyMs: 3000, Region: "GD", ISP: "telecom", Client: "198.51.100.7"})
	for _, s := range []string{string(b), `{}`, ` { "session" : "a" , "first_frame_ms" : -0 } `, `{"session":"a","session":"b"}`,
		`{"Session":"a"}`, `{"session":"\u00e9"}`, `{"buffer_empty_ms":01}`, `{"buffer_empty_ms":1.5}`, `{"time":"2026-01-02T03:04:05+08:00"}`,
		`{"time":"2026-13-02T03:04:05Z"}`, `{"session":null}`, `[{"session":"a"}]`, `{"session":"a"} x`, `{"buffer_empty_ms":99999999999999999999}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got, ok := decodeBeaconFast(in)
		if !ok {
			return
		}
		var want bus.Beacon
		if err := json.Unmarshal(in, &want); err != nil {
			t.Fatalf("fast accepted %q, encoding/json: %v", in, err)
		}
		if !reflect.DeepEqual(got, want) || !got.Time.Equal(want.Time) {
			t.Fatalf("%q: fast %+v, encoding/json %+v", in, got, want)
		}
	})
}

func TestDecodeBeaconFast(t *testing.T) {
	for _, c := range []struct {
		in string
		ok bool
	}{
		{`{"session":"s","vendor":"v","event":"stall","buffer_empty_ms":2000,"time":"2026-12-03T12:00:00.5Z"}`, true},
		{`{"session":"s","extra":1}`, false}, {`{"session":"s\"x"}`, false}, {`{"session":"s"`, false},
		{`{"buffer_empty_ms":-}`, false}, {`{"session":"s",}`, false},
	} {
		if _, ok := decodeBeaconFast([]byte(c.in)); ok != c.ok {
			t.Errorf("%s: ok %v, want %v", c.in, ok, c.ok)
		}
	}
}
