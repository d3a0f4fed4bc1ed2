package origin

import (
	"net/url"
	"strconv"
	"time"

	"github.com/livefuse/livefuse/av"
)

// HTTP-FLV resume: a player that lost its connection (a unit or a vendor
// gone) asks again with the point it reached,
//
//	GET /{app}/{name}.flv?resume_after=T&resume_key=K
//
// T is the timestamp (FLV, ms) of the last video frame the player has and
// K the timestamp of the keyframe that began its GOP. Every unit of a
// stream carries the same encoder's timeline (the switcher keeps a feed's
// own timestamps, and rebases a switch to follow the last frame shown), so
// T means the same frame on any unit. The response starts as usual (FLV
// header, onMetaData, sequence headers), then:
//
//   - Same GOP: the first video frame this unit has (its cached GOP's
//     keyframe) is at K. Only tags after T follow: the player continues
//     from the next frame, nothing repeated, nothing skipped that the unit
//     holds.
//   - Otherwise (another GOP, T older than the cache, or a feed
//     switch that put a keyframe at or before T): nothing is sent before
//     the next keyframe. If that keyframe is after T, it comes as is (the
//     frames between T and it are gone: the gap). If it is at or before T,
//     or more than 5 s after it (another timeline: a unit that restarted
//     takes the timestamps of the first feed it gets), the rest of the
//     response is shifted to put it one frame after T, so the player's
//     timeline goes on without going back or jumping.
//
// Audio tags at or before T are never sent (a player may still see audio
// it had between T and its last audio tag: it drops those). Without both
// parameters (or with K after T) the response is a plain start.
type flvResume struct {
	after, key time.Duration
	sameGOP    bool // decided at the first video frame
	decided    bool
	keyed      bool          // a keyframe has been sent (or the GOP continues)
	shift      time.Duration // added to every A/V timestamp
	lastVideo  time.Duration // last video DTS seen, for the frame interval
	frame      time.Duration // measured video frame interval
}

// maxResume bounds the timestamps a player may name (the 32-bit FLV clock).
const maxResume = 1<<32 - 1

// parseResume reads resume_after and resume_key; nil when either is
// absent or malformed, or K is after T (then the response is a plain
// start).
func parseResume(q url.Values) *flvResume {
	t, ok := resumeMs(q.Get("resume_after"))
	k, ok2 := resumeMs(q.Get("resume_key"))
	if !ok || !ok2 || k > t {
		return nil
	}
	return &flvResume{after: t, key: k}
}

// resumeMs parses a timestamp in ms (0 to 2^32-1).
func resumeMs(s string) (time.Duration, bool) {
	if s == "" || len(s) > 10 {
		return 0, false
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 || v > maxResume {
		return 0, false
	}
	return time.Duration(v) * time.Millisecond, true
}

// msOf is a DTS as the FLV timestamp a player sees.
func msOf(d time.Duration) time.Duration { return d.Truncate(time.Millisecond) }

// filter returns the packet to send in p's place (p, or a shifted copy),
// or nil to drop it. Headers and metadata always pass.
func (rs *flvResume) filter(p *av.Packet) *av.Packet {
	if p.Header || (p.Kind != av.KindVideo && p.Kind != av.KindAudio) {
		return p
	}
	if p.Kind == av.KindVideo {
		if rs.lastVideo > 0 && p.DTS > rs.lastVideo {
			rs.frame = p.DTS - rs.lastVideo
		}
		rs.lastVideo = p.DTS
		if !rs.decided {
			rs.decided = true
			rs.sameGOP = p.Key && msOf(p.DTS) == rs.key
			rs.keyed = rs.sameGOP
		}
		d := msOf(p.DTS + rs.shift) // on the player's timeline
		behind := d <= rs.after && (!rs.sameGOP || d > rs.key)
		if p.Key && !rs.keyed && !behind && d > rs.after+maxJump {
			behind = true // another timeline (a unit restarted): follow T too
		}
		if p.Key && behind {
			// A keyframe the player does not have, at or before T (or on
			// another timeline): from here on the response is shifted to
			// follow T.
			frame := rs.frame
			if frame <= 0 || frame > time.Second {
				frame = defaultFrame
			}
			rs.shift = rs.after + frame - p.DTS
			rs.sameGOP, rs.keyed = false, true
		} else if p.Key && !rs.keyed {
			rs.keyed = true
		}
		if !rs.keyed {
			return nil
		}
	} else if !rs.keyed {
		return nil
	}
	if rs.shift == 0 {
		if msOf(p.DTS) <= rs.after {
			return nil
		}
		return p
	}
	dts := p.DTS + rs.shift
	if msOf(dts) <= rs.after {
		return nil
	}
	c := *p
	c.DTS = dts
	return &c
}
