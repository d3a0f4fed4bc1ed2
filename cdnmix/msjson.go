package cdnmix

import (
	"encoding/json"
	"time"
)

// First-frame percentiles are durations in Go and milliseconds in JSON,
// with the unit in the name (first_frame_p50_ms): they used to come out
// as nanoseconds under first_frame_p50 (390000000 for 390 ms). Decoding
// still takes the old nanosecond fields when the new ones are absent.

type firstFrameJSON struct {
	P50Ms *int64 `json:"first_frame_p50_ms,omitempty"`
	P95Ms *int64 `json:"first_frame_p95_ms,omitempty"`
	// Before: nanoseconds (decoding only).
	OldP50 *int64 `json:"first_frame_p50,omitempty"`
	OldP95 *int64 `json:"first_frame_p95,omitempty"`
}

func encodeFirstFrame(p50, p95 time.Duration) firstFrameJSON {
	a, b := p50.Milliseconds(), p95.Milliseconds()
	return firstFrameJSON{P50Ms: &a, P95Ms: &b}
}

func (f firstFrameJSON) decode() (p50, p95 time.Duration) {
	pick := func(ms, ns *int64) time.Duration {
		switch {
		case ms != nil:
			return time.Duration(*ms) * time.Millisecond
		case ns != nil:
			return time.Duration(*ns)
		}
		return 0
	}
	return pick(f.P50Ms, f.OldP50), pick(f.P95Ms, f.OldP95)
}

type observationFields Observation

// MarshalJSON writes the first-frame percentiles in milliseconds.
func (o Observation) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		observationFields
		firstFrameJSON
	}{observationFields(o), encodeFirstFrame(o.FirstFrameP50, o.FirstFrameP95)})
}

// UnmarshalJSON reads what MarshalJSON writes (and the old nanoseconds).
func (o *Observation) UnmarshalJSON(b []byte) error {
	var v struct {
		observationFields
		firstFrameJSON
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*o = Observation(v.observationFields)
	o.FirstFrameP50, o.FirstFrameP95 = v.firstFrameJSON.decode()
	return nil
}

type minuteStatFields MinuteStat

// MarshalJSON writes the first-frame percentiles in milliseconds.
func (m MinuteStat) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		minuteStatFields
		firstFrameJSON
	}{minuteStatFields(m), encodeFirstFrame(m.FirstFrameP50, m.FirstFrameP95)})
}

// UnmarshalJSON reads what MarshalJSON writes (and the old nanoseconds).
func (m *MinuteStat) UnmarshalJSON(b []byte) error {
	var v struct {
		minuteStatFields
		firstFrameJSON
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*m = MinuteStat(v.minuteStatFields)
	m.FirstFrameP50, m.FirstFrameP95 = v.firstFrameJSON.decode()
	return nil
}
