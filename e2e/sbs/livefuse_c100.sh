# livefuse with origin.flv_coalesce 100ms, HTTP-FLV players only (a point of the CPU-versus-delay curve).
NAME_OVERRIDE=livefuse_c100 LF_COALESCE=100ms LF_FLV_ONLY=1
source "$BENCH/targets/livefuse.sh"
unset NAME_OVERRIDE
