# livefuse with origin.flv_coalesce 200ms, HTTP-FLV players only (a point of the CPU-versus-delay curve).
NAME_OVERRIDE=livefuse_c200 LF_COALESCE=200ms LF_FLV_ONLY=1
source "$BENCH/targets/livefuse.sh"
unset NAME_OVERRIDE
