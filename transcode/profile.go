package transcode

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode"
)

// Profile is what the pool does to a stream: a ladder of renditions and an
// optional watermark. Profiles are declared in the config file and managed
// through the control API; a stream names its profile.
type Profile struct {
	Name       string      `yaml:"name" json:"name"`
	Renditions []Rendition `yaml:"renditions" json:"renditions"`
	Watermark  *Watermark  `yaml:"watermark" json:"watermark,omitempty"`
	// WatermarkSource adds the rendition "source": the original picture
	// size with the watermark, at SourceKbps. Players should then be given
	// it in place of the original, which carries no watermark.
	WatermarkSource bool `yaml:"watermark_source" json:"watermark_source,omitempty"`
	SourceKbps      int  `yaml:"source_kbps" json:"source_kbps,omitempty"`
	// GOP is the keyframe interval of every rendition (default 2 s). All
	// renditions get keyframes at the same instants, so players can switch
	// between them at any keyframe.
	GOP Duration `yaml:"gop" json:"gop,omitempty"`
	// Keyframes is "fixed" (default: a keyframe every GOP) or "source":
	// keyframes where the source has them, so renditions also line up
	// with the source (for an ABR playlist that lists it). "source" cannot
	// be combined with max_fps (dropped frames lose the source's marks).
	Keyframes string `yaml:"keyframes" json:"keyframes,omitempty"`
}

// Rendition is one rung of a ladder, published as app/NAME_<Name>.
type Rendition struct {
	Name   string `yaml:"name" json:"name"`
	Width  int    `yaml:"width" json:"width"`
	Height int    `yaml:"height" json:"height"`
	// VideoKbps is the target video bitrate (kbit/s); maxrate is the same
	// and the VBV buffer twice that.
	VideoKbps int `yaml:"video_kbps" json:"video_kbps"`
	// MaxFPS caps the frame rate (0: the source's).
	MaxFPS float64 `yaml:"max_fps" json:"max_fps,omitempty"`
	// Preset is the x264 preset (default veryfast).
	Preset string `yaml:"preset" json:"preset,omitempty"`
}

// Watermark is an image, a text, or both, drawn on the picture before it
// is scaled for the renditions (so it keeps its place and relative size).
type Watermark struct {
	// Image is a PNG (or any image ffmpeg reads) on the node's disk.
	Image string `yaml:"image" json:"image,omitempty"`
	// Position is top-left, top-right, bottom-left, bottom-right
	// (default) or center; Margin is in source pixels.
	Position string `yaml:"position" json:"position,omitempty"`
	Margin   int    `yaml:"margin" json:"margin,omitempty"`
	// Opacity of the image, 0 < Opacity ≤ 1 (0 means 1).
	Opacity float64 `yaml:"opacity" json:"opacity,omitempty"`
	// Text is drawn at the opposite corner of the image (or at Position
	// when there is no image). Letters, digits, spaces and -_.@#!/()+ only.
	Text     string `yaml:"text" json:"text,omitempty"`
	FontSize int    `yaml:"font_size" json:"font_size,omitempty"`
	FontFile string `yaml:"font_file" json:"font_file,omitempty"`
	// Time appends the local wall time (YYYY-MM-DD HH:MM:SS) to Text.
	Time bool `yaml:"time" json:"time,omitempty"`
}

// Duration is a time.Duration that reads "2s" in YAML and JSON.
type Duration time.Duration

// UnmarshalText accepts Go durations ("2s", "1500ms").
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the Go form ("2s").
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Defaults of a profile.
const (
	DefaultGOP    = 2 * time.Second
	DefaultPreset = "veryfast"
)

// Keyframe placements.
const (
	KeyframesFixed  = "fixed"
	KeyframesSource = "source"
)

// RenditionSource is the name of the watermarked source rendition.
const RenditionSource = "source"

var presets = map[string]bool{"ultrafast": true, "superfast": true, "veryfast": true, "faster": true,
	"fast": true, "medium": true, "slow": true, "slower": true, "veryslow": true}

var positions = map[string]bool{"top-left": true, "top-right": true, "bottom-left": true,
	"bottom-right": true, "center": true}

// ErrInvalidProfile is wrapped by every validation error.
var ErrInvalidProfile = errors.New("invalid profile")

// Limits of a profile.
const (
	maxRenditions = 8
	maxDimension  = 7680
	maxKbps       = 100_000
	maxFontSize   = 512
)

// Validate checks p and fills its defaults. It checks that the watermark
// files exist, so run it on the node that transcodes.
func (p *Profile) Validate() error {
	if err := p.validate(); err != nil {
		if p.Name != "" {
			return fmt.Errorf("%w %q: %w", ErrInvalidProfile, p.Name, err)
		}
		return fmt.Errorf("%w: %w", ErrInvalidProfile, err)
	}
	return nil
}

func (p *Profile) validate() error {
	if err := validName(p.Name); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	if len(p.Renditions) == 0 && !p.WatermarkSource {
		return errors.New("renditions: at least one is required (or watermark_source)")
	}
	if len(p.Renditions) > maxRenditions {
		return fmt.Errorf("renditions: %d, at most %d", len(p.Renditions), maxRenditions)
	}
	seen := map[string]bool{}
	for i := range p.Renditions {
		r := &p.Renditions[i]
		if err := r.validate(); err != nil {
			return fmt.Errorf("renditions[%d]: %w", i, err)
		}
		if r.Name == RenditionSource {
			return fmt.Errorf("renditions[%d]: name %q is reserved for watermark_source", i, r.Name)
		}
		if seen[r.Name] {
			return fmt.Errorf("renditions[%d]: name %q used twice", i, r.Name)
		}
		seen[r.Name] = true
	}
	if p.WatermarkSource {
		if p.Watermark == nil {
			return errors.New("watermark_source needs a watermark")
		}
		if p.SourceKbps <= 0 || p.SourceKbps > maxKbps {
			return fmt.Errorf("source_kbps %d: want 1..%d with watermark_source", p.SourceKbps, maxKbps)
		}
	} else if p.SourceKbps != 0 {
		return errors.New("source_kbps is only used with watermark_source")
	}
	if p.Watermark != nil {
		if err := p.Watermark.validate(); err != nil {
			return fmt.Errorf("watermark: %w", err)
		}
	}
	switch p.Keyframes {
	case "":
		p.Keyframes = KeyframesFixed
	case KeyframesFixed:
	case KeyframesSource:
		for _, r := range p.Renditions {
			if r.MaxFPS > 0 {
				return fmt.Errorf("keyframes: source cannot be combined with max_fps (rendition %q)", r.Name)
			}
		}
	default:
		return fmt.Errorf("keyframes %q: want fixed or source", p.Keyframes)
	}
	switch {
	case p.GOP == 0:
		p.GOP = Duration(DefaultGOP)
	case time.Duration(p.GOP) < 500*time.Millisecond || time.Duration(p.GOP) > 10*time.Second:
		return fmt.Errorf("gop %v: want 500ms..10s", time.Duration(p.GOP))
	}
	return nil
}

func (r *Rendition) validate() error {
	if err := validName(r.Name); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	for _, d := range []struct {
		what string
		v    int
	}{{"width", r.Width}, {"height", r.Height}} {
		if d.v <= 0 || d.v > maxDimension {
			return fmt.Errorf("%s %d: want 2..%d", d.what, d.v, maxDimension)
		}
		if d.v%2 != 0 {
			return fmt.Errorf("%s %d is odd: H.264 4:2:0 needs even dimensions", d.what, d.v)
		}
	}
	if r.VideoKbps <= 0 || r.VideoKbps > maxKbps {
		return fmt.Errorf("video_kbps %d: want 1..%d", r.VideoKbps, maxKbps)
	}
	if r.MaxFPS < 0 || r.MaxFPS > 240 {
		return fmt.Errorf("max_fps %g: want 0..240", r.MaxFPS)
	}
	if r.Preset == "" {
		r.Preset = DefaultPreset
	}
	if !presets[r.Preset] {
		return fmt.Errorf("preset %q: not an x264 preset", r.Preset)
	}
	return nil
}

func (w *Watermark) validate() error {
	if w.Image == "" && w.Text == "" && !w.Time {
		return errors.New("needs an image, a text or time")
	}
	if w.Image != "" {
		fi, err := os.Stat(w.Image)
		if err != nil {
			return fmt.Errorf("image: %w", err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("image %s: not a regular file", w.Image)
		}
	}
	if w.Position == "" {
		w.Position = "bottom-right"
	}
	if !positions[w.Position] {
		return fmt.Errorf("position %q: want top-left, top-right, bottom-left, bottom-right or center", w.Position)
	}
	if w.Margin < 0 || w.Margin > maxDimension {
		return fmt.Errorf("margin %d: want 0..%d", w.Margin, maxDimension)
	}
	if w.Opacity == 0 {
		w.Opacity = 1
	}
	if w.Opacity < 0 || w.Opacity > 1 {
		return fmt.Errorf("opacity %g: want 0 < opacity <= 1", w.Opacity)
	}
	if len(w.Text) > 200 {
		return fmt.Errorf("text: %d bytes, at most 200", len(w.Text))
	}
	for _, c := range w.Text {
		if !textRune(c) {
			return fmt.Errorf("text: character %q not allowed (letters, digits, spaces and -_.@#!/()+)", c)
		}
	}
	if w.Text != "" || w.Time {
		if w.FontSize == 0 {
			w.FontSize = 24
		}
		if w.FontSize < 4 || w.FontSize > maxFontSize {
			return fmt.Errorf("font_size %d: want 4..%d", w.FontSize, maxFontSize)
		}
		if w.FontFile != "" {
			if _, err := os.Stat(w.FontFile); err != nil {
				return fmt.Errorf("font_file: %w", err)
			}
			if strings.ContainsAny(w.FontFile, `'\:[],;`) {
				return fmt.Errorf("font_file %q: quotes, colons, brackets, commas and semicolons are not allowed", w.FontFile)
			}
		}
	}
	return nil
}

// textRune tells the characters a watermark text may hold: none of them is
// special to ffmpeg's filter graph or drawtext expansion, so the text needs
// no escaping.
func textRune(c rune) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	case c > 0x7f:
		return unicode.IsLetter(c) || unicode.IsDigit(c) // other scripts
	}
	return strings.ContainsRune(" -_.@#!/()+", c)
}

// validName is the rule of stream names (ingest.ParseStreamPath), so that
// NAME_<rendition> is a valid stream name too; renditions are kept short.
func validName(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > 32 {
		return fmt.Errorf("%q longer than 32 bytes", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return fmt.Errorf("%q: only letters, digits, '-' and '_'", s)
		}
	}
	return nil
}

// ValidateProfiles validates a whole set (defaults filled in the copies it
// returns); one bad profile refuses the set, so nothing is half-applied.
func ValidateProfiles(ps []Profile) ([]Profile, error) {
	out := make([]Profile, len(ps))
	seen := map[string]bool{}
	for i, p := range ps {
		p = p.clone()
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("profiles[%d]: %w", i, err)
		}
		if seen[p.Name] {
			return nil, fmt.Errorf("profiles[%d]: %w: name %q used twice", i, ErrInvalidProfile, p.Name)
		}
		seen[p.Name] = true
		out[i] = p
	}
	return out, nil
}

// ParseProfileJSON decodes and validates one profile from JSON, refusing
// unknown fields (a typo must not silently fall back to a default). The
// control API uses it through a validator function.
func ParseProfileJSON(b []byte) (Profile, error) {
	var p Profile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return Profile{}, fmt.Errorf("%w: %w", ErrInvalidProfile, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Profile{}, fmt.Errorf("%w: trailing data after the profile", ErrInvalidProfile)
	}
	if err := p.Validate(); err != nil {
		return Profile{}, err
	}
	return p, nil
}

// clone copies p deeply, so validation defaults never touch the caller's.
func (p Profile) clone() Profile {
	p.Renditions = append([]Rendition(nil), p.Renditions...)
	if p.Watermark != nil {
		w := *p.Watermark
		p.Watermark = &w
	}
	return p
}

// outputs lists what the worker writes, in pipe order: the renditions,
// then the watermarked source.
func (p *Profile) outputs() []string {
	names := make([]string, 0, len(p.Renditions)+1)
	for _, r := range p.Renditions {
		names = append(names, r.Name)
	}
	if p.WatermarkSource {
		names = append(names, RenditionSource)
	}
	return names
}
