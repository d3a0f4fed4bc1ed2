package origin

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"regexp"
	"strings"

	"github.com/livefuse/livefuse/av"
)

// tsFileRe matches the files of the MPEG-TS HLS output (tshls).
var tsFileRe = regexp.MustCompile(`^(index\.m3u8|seg[0-9]{1,20}\.ts)$`)

// tsOutput packages one stream as MPEG-TS HLS with tshls, livefuse's own
// packager: unlike gohlslib it marks a discontinuity when the switcher
// moves to a feed with other codec parameters (or the slate), and it names
// segments after their media sequence number, so two units fed the same
// encoder give the same names. It is an internal reader of the Stream
// from publish on.
type tsOutput struct {
	pk     *tshls
	reader *Reader
	log    *slog.Logger
	done   chan struct{}
}

// newTSOutput starts packaging s; with keys (nil: no encryption) the
// packager does SAMPLE-AES itself when encrypted (from the start, or when
// the stream's policy turns it on): it is the only owner of its state.
func newTSOutput(cfg Config, log *slog.Logger, key string, s *Stream, keys *sessionKeys, encrypted bool) *tsOutput {
	tc := tshlsConfig{Stream: key, SegmentDuration: cfg.HLSSegmentDuration,
		SegmentCount: cfg.HLSSegmentCount, Logger: log}
	if cfg.spoolTS() {
		tc.Dir, tc.DirPrefix = cfg.HLSDir, strings.ReplaceAll(key, "/", ".")
	}
	if keys != nil {
		tc.NewKey = keys.forPackager()
		tc.RotateSegments = cfg.Encryption.RotateSegments
		tc.Encrypted = encrypted
	}
	return &tsOutput{
		pk:     newTSHLS(tc),
		reader: s.subscribe(true, roleInternal),
		log:    log,
		done:   make(chan struct{}),
	}
}

// run packages until the stream ends, then finishes the last segment.
func (o *tsOutput) run() {
	defer close(o.done)
	defer o.pk.close()
	defer o.reader.Close()
	pkts := make([]*av.Packet, 0, 64)
	for {
		var err error
		pkts, err = o.reader.ReadPackets(context.Background(), pkts[:0])
		for _, p := range pkts {
			o.pk.writePacket(p)
		}
		clear(pkts)
		if err != nil {
			if errors.Is(err, ErrDropped) {
				o.log.Error("hls packager fell behind the stream and stopped")
			}
			return
		}
	}
}

func (h *Hub) serveTS(w http.ResponseWriter, r *http.Request, o *tsOutput) {
	tw := &trackingWriter{ResponseWriter: w}
	o.pk.ServeHTTP(tw, r)
	h.m.hlsBytes.Add(float64(tw.n))
}
