package transcode

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"time"
)

// Progress is one block of ffmpeg's -progress report.
type Progress struct {
	Frame   int64         // frames encoded (first output)
	FPS     float64       // encoding frame rate
	OutTime time.Duration // media time written
	Speed   float64       // media time per wall time (1 = real time)
	Size    int64         // bytes written (first output)
	Dup     int64
	Drop    int64
	End     bool // progress=end: ffmpeg is finishing
}

// maxProgressLine bounds one line of the report; longer lines are skipped.
const maxProgressLine = 4096

// ReadProgress reads ffmpeg's -progress output from r and calls fn once per
// block (a block ends with a "progress=" line). It returns at the end of r
// with nil, or with the read error. Malformed lines and values are ignored:
// the report is a hint, and ffmpeg prints "N/A" for values it lacks.
func ReadProgress(r io.Reader, fn func(Progress)) error {
	br := bufio.NewReaderSize(r, maxProgressLine)
	var p Progress
	for {
		line, err := readLine(br)
		if len(line) > 0 {
			if parseProgressLine(&p, line) {
				fn(p)
				p = Progress{}
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// readLine returns the next line without its end; an over-long line is
// returned empty (skipped).
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = br.ReadSlice('\n')
		}
		return nil, err
	}
	return bytes.TrimRight(line, "\r\n"), err
}

// parseProgressLine applies one key=value line to p and reports whether it
// ended a block.
func parseProgressLine(p *Progress, line []byte) bool {
	k, v, ok := bytes.Cut(line, []byte{'='})
	if !ok {
		return false
	}
	key := string(bytes.TrimSpace(k))
	val := strings.TrimSpace(string(v))
	switch key {
	case "frame":
		p.Frame = parseInt(val)
	case "fps":
		p.FPS = parseFloat(val)
	case "out_time_us", "out_time_ms": // both are microseconds in ffmpeg ≥ 4
		if us := parseInt(val); us > 0 && us < int64(1<<62)/1000 {
			p.OutTime = time.Duration(us) * time.Microsecond
		}
	case "total_size":
		p.Size = parseInt(val)
	case "dup_frames":
		p.Dup = parseInt(val)
	case "drop_frames":
		p.Drop = parseInt(val)
	case "speed":
		p.Speed = parseFloat(strings.TrimSuffix(val, "x"))
	case "progress":
		p.End = val == "end"
		return true
	}
	return false
}

func parseInt(s string) int64 {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

func parseFloat(s string) float64 {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || f != f || f > 1e9 {
		return 0
	}
	return f
}
