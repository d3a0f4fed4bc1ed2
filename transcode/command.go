package transcode

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// fdFirstOutput is the file descriptor of the first output pipe in the
// child: 0, 1 and 2 are stdin, stdout and stderr, and exec.Cmd.ExtraFiles
// start at 3.
const fdFirstOutput = 3

// Command is an ffmpeg invocation for one stream: FLV in on stdin, one FLV
// out per output on pipe:3, pipe:4, …, and the -progress report on the
// pipe after them.
type Command struct {
	// Outputs are the rendition names in pipe order.
	Outputs []string
	// ProgressFD is the child's descriptor of the progress pipe.
	ProgressFD int
	// Args are ffmpeg's arguments (without the program name).
	Args []string
}

// BuildCommand builds the ffmpeg arguments for p (validated). The video is
// decoded once; the watermark is drawn at source size, then split and
// scaled for every rendition. Keyframes are forced at the same instants in
// every rendition (every GOP, or at the source's keyframes; scene cuts
// off) so players can switch at any keyframe. Audio is copied into every
// rendition unchanged.
func BuildCommand(p *Profile) Command {
	outs := p.outputs()
	progressFD := fdFirstOutput + len(outs)
	a := []string{
		"-hide_banner", "-nostdin", "-loglevel", "warning", "-nostats",
		"-progress", "pipe:" + strconv.Itoa(progressFD), "-stats_period", "0.5",
		// Start fast: the sequence headers come first, no need to probe long.
		"-probesize", "65536", "-analyzeduration", "500000",
		"-f", "flv", "-i", "pipe:0",
	}
	wm := p.Watermark
	hasImage := wm != nil && wm.Image != ""
	if hasImage {
		a = append(a, "-i", wm.Image)
	}
	a = append(a, "-filter_complex", filterGraph(p))

	keyExpr := "expr:gte(t,n_forced*" + formatFloat(time.Duration(p.GOP).Seconds()) + ")"
	if p.Keyframes == KeyframesSource {
		keyExpr = "source"
	}
	for i, r := range p.Renditions {
		a = append(a, "-map", fmt.Sprintf("[v%d]", i))
		a = append(a, videoCodec(r.Preset, r.VideoKbps, keyExpr)...)
		if r.MaxFPS > 0 {
			a = append(a, "-fpsmax", formatFloat(r.MaxFPS))
		}
		a = append(a, flvOutput(fdFirstOutput+i)...)
	}
	if p.WatermarkSource {
		a = append(a, "-map", "[vsrc]")
		a = append(a, videoCodec(DefaultPreset, p.SourceKbps, keyExpr)...)
		a = append(a, flvOutput(fdFirstOutput+len(p.Renditions))...)
	}
	return Command{Outputs: outs, ProgressFD: progressFD, Args: a}
}

func videoCodec(preset string, kbps int, keyExpr string) []string {
	rate := strconv.Itoa(kbps) + "k"
	return []string{
		"-c:v", "libx264", "-preset", preset, "-pix_fmt", "yuv420p",
		"-b:v", rate, "-maxrate", rate, "-bufsize", strconv.Itoa(2*kbps) + "k",
		"-force_key_frames", keyExpr, "-sc_threshold", "0",
		// No keyframes but the forced ones: a long natural GOP.
		"-g", "600", "-keyint_min", "600",
	}
}

func flvOutput(fd int) []string {
	return []string{
		"-map", "0:a?", "-c:a", "copy",
		"-flush_packets", "1",
		"-f", "flv", "-flvflags", "no_duration_filesize",
		"pipe:" + strconv.Itoa(fd),
	}
}

// filterGraph is the -filter_complex value: [0:v] (plus the watermark
// image as [1:v]) to [v0] … [vN-1] and [vsrc].
func filterGraph(p *Profile) string {
	var chains []string
	in := "[0:v]"
	if wm := p.Watermark; wm != nil {
		if wm.Image != "" {
			logo := "[1:v]format=rgba"
			if wm.Opacity < 1 {
				logo += ",colorchannelmixer=aa=" + formatFloat(wm.Opacity)
			}
			chains = append(chains, logo+"[logo]")
			x, y := place(wm.Position, wm.Margin, "W", "H", "w", "h")
			chains = append(chains, in+"[logo]overlay=x="+x+":y="+y+":eof_action=repeat:format=auto[wm0]")
			in = "[wm0]"
		}
		if wm.Text != "" || wm.Time {
			chains = append(chains, in+drawText(wm)+"[wm1]")
			in = "[wm1]"
		}
	}
	n := len(p.Renditions)
	if p.WatermarkSource {
		n++
	}
	var labels []string
	for i := range p.Renditions {
		labels = append(labels, fmt.Sprintf("[s%d]", i))
	}
	if p.WatermarkSource {
		labels = append(labels, "[ssrc]")
	}
	if n == 1 {
		// split=1 is legal but pointless: rename through a null filter.
		chains = append(chains, in+"null"+labels[0])
	} else {
		chains = append(chains, in+"split="+strconv.Itoa(n)+strings.Join(labels, ""))
	}
	for i, r := range p.Renditions {
		chains = append(chains, fmt.Sprintf("[s%d]scale=%d:%d,setsar=1,format=yuv420p[v%d]", i, r.Width, r.Height, i))
	}
	if p.WatermarkSource {
		chains = append(chains, "[ssrc]format=yuv420p[vsrc]")
	}
	return strings.Join(chains, ";")
}

// drawText is the drawtext filter for wm. The text holds no character that
// needs escaping (see textRune); the time expansion has no argument, so no
// colon needs escaping either.
func drawText(wm *Watermark) string {
	text := wm.Text
	if wm.Time {
		if text != "" {
			text += " "
		}
		text += "%{localtime}"
	}
	pos := wm.Position
	if wm.Image != "" {
		pos = opposite(pos)
	}
	x, y := place(pos, wm.Margin, "w", "h", "text_w", "text_h")
	f := "drawtext=text='" + text + "':fontsize=" + strconv.Itoa(wm.FontSize) +
		":fontcolor=white:borderw=2:bordercolor=black@0.6:x=" + x + ":y=" + y
	if wm.FontFile != "" {
		f += ":fontfile='" + wm.FontFile + "'"
	}
	return f
}

// place gives the x and y expressions of a box of size bw×bh at pos inside
// a frame of W×H with margin m.
func place(pos string, m int, W, H, bw, bh string) (x, y string) {
	ms := strconv.Itoa(m)
	left, top := ms, ms
	right := W + "-" + bw + "-" + ms
	bottom := H + "-" + bh + "-" + ms
	switch pos {
	case "top-left":
		return left, top
	case "top-right":
		return right, top
	case "bottom-left":
		return left, bottom
	case "center":
		return "(" + W + "-" + bw + ")/2", "(" + H + "-" + bh + ")/2"
	}
	return right, bottom
}

func opposite(pos string) string {
	switch pos {
	case "top-left":
		return "bottom-right"
	case "top-right":
		return "bottom-left"
	case "bottom-left":
		return "top-right"
	case "bottom-right":
		return "top-left"
	}
	return "top-left" // image centred: text in the corner
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
