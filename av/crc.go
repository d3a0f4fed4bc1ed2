package av

// CRC32MPEG2 is the CRC of MPEG-TS PSI sections (PAT, PMT; ISO/IEC 13818-1
// Annex A): polynomial 0x04C11DB7, initial value all ones, no reflection,
// no final XOR. A section followed by its own CRC checks to 0. Sections
// are short and written once per segment, so it goes bit by bit, with no
// table.
func CRC32MPEG2(b []byte) uint32 {
	crc := uint32(0xffffffff)
	for _, c := range b {
		crc ^= uint32(c) << 24
		for range 8 {
			if crc&0x80000000 != 0 {
				crc = crc<<1 ^ 0x04c11db7
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
