package ingest

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"
)

// runRTSPPull plays src (rtsp:// or rtsps://, credentials in the URL are
// used for authentication) over TCP and writes its H.264 and AAC tracks to
// w until the source fails or ctx ends. Other tracks are skipped.
func runRTSPPull(ctx context.Context, src string, w FeedWriter, log *slog.Logger) error {
	u, err := base.ParseURL(src)
	if err != nil {
		return fmt.Errorf("rtsp pull: %w", err)
	}
	tcp := gortsplib.TransportTCP
	c := &gortsplib.Client{
		Scheme:    u.Scheme,
		Host:      u.Host,
		Transport: &tcp,
		OnPacketsLost: func(lost uint64) {
			log.Debug("rtsp pull packets lost", "lost", lost)
		},
		OnDecodeError: func(err error) {
			log.Debug("rtsp pull decode error", "err", err)
		},
		OnTransportSwitch: func(err error) {
			log.Info("rtsp pull transport switch", "err", err)
		},
	}
	if err := c.Start2(); err != nil {
		return fmt.Errorf("rtsp pull: %w", err)
	}
	defer c.Close()
	// requests block until answered or the client closes; closing on ctx
	// ends them as well as the playing session
	stop := context.AfterFunc(ctx, c.Close)
	defer stop()

	desc, res, err := c.Describe(u)
	if err != nil {
		return fmt.Errorf("rtsp pull describe: %w", err)
	}
	tracks, err := rtspPickTracks(desc, res.Body, false)
	if err != nil {
		return fmt.Errorf("rtsp pull: %w", err)
	}
	if len(tracks.skipped) > 0 {
		log.Warn("rtsp pull: skipping tracks livefuse cannot carry", "skipped", tracks.skipped)
	}
	conv, err := newRTSPConverter(tracks, c.PacketPTS2, w.WritePacket, log)
	if err != nil {
		return fmt.Errorf("rtsp pull: %w", err)
	}
	defer conv.close()
	for _, medi := range []*description.Media{tracks.videoMedia, tracks.audioMedia} {
		if medi == nil {
			continue
		}
		if _, err := c.Setup(desc.BaseURL, medi, 0, 0); err != nil {
			return fmt.Errorf("rtsp pull setup %s: %w", medi.Type, err)
		}
	}
	c.OnPacketRTPAny(func(medi *description.Media, _ format.Format, pkt *rtp.Packet) {
		conv.handleRTP(medi, pkt)
	})
	if _, err := c.Play(nil); err != nil {
		return fmt.Errorf("rtsp pull play: %w", err)
	}
	log.Info("rtsp pull playing", "video", tracks.video != nil, "audio", tracks.audio != nil)
	err = c.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("rtsp pull: %w", err)
}
