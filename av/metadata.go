package av

import "bytes"

// The AMF0 strings (marker 2, 16-bit length) that open a metadata body.
const (
	amfSetDataFrame = "\x02\x00\x0d@setDataFrame"
	amfOnMetaData   = "\x02\x00\x0aonMetaData"
)

// IsMetaDataBody reports whether a script-data body is onMetaData (also in
// the "@setDataFrame" form encoders send over RTMP). It only looks at the
// name: the values are checked by whoever decodes them (DecodeScript).
func IsMetaDataBody(b []byte) bool {
	_, ok := MetaDataBody(b)
	return ok
}

// MetaDataBody returns the onMetaData body b carries, without the
// "@setDataFrame" name an RTMP encoder puts before it (what an FLV file's
// script tag holds), and whether b is onMetaData at all. It does not copy.
func MetaDataBody(b []byte) ([]byte, bool) {
	b = bytes.TrimPrefix(b, []byte(amfSetDataFrame))
	return b, bytes.HasPrefix(b, []byte(amfOnMetaData))
}
