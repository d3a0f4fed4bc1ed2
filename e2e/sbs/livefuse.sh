# livefuse (Go origin under test): RTMP in; RTMP, HTTP-FLV and HLS out.
# This copy (from the livefuse repo, e2e/sbs; `make bench SBS=DIR` installs it
# over DIR/targets/livefuse.sh) lifts the RTMP listener's per-address cap,
# which would refuse most of 1000 players from 127.0.0.1.
# Config as its own e2e/loadtool writes it (defaults otherwise: flv_coalesce 40ms,
# HLS mpegts 1 s segments, encryption.outputs all), on loopback ports of its own.
#   LF_COALESCE=0s  -> origin.flv_coalesce 0s (the non-batched HTTP-FLV mode)
#   LF_FLV_ONLY=1   -> no RTMP players (HTTP-FLV only)
NAME=${NAME_OVERRIDE:-livefuse}
LF_BIN=${LF_BIN:?set LF_BIN to the livefuse binary under test (make build; then LF_BIN=$PWD/bin/livefuse)}
LF_RTMP_PORT=${LF_RTMP_PORT:-19353}
LF_HTTP_PORT=${LF_HTTP_PORT:-18082}
LF_RTSP_PORT=${LF_RTSP_PORT:-18555}
LF_API_PORT=${LF_API_PORT:-19354}
LF_COALESCE=${LF_COALESCE:-}
LF_TOKEN=${LF_TOKEN:-benchT0k}
PUB_URL="rtmp://127.0.0.1:$LF_RTMP_PORT/live/$STREAM?token=$LF_TOKEN"
[[ $PUB_MODE == go-ffmpeg ]] && PUB_URL="rtsp://127.0.0.1:$LF_RTSP_PORT/live/$STREAM?token=$LF_TOKEN" && FFMPEG_OUT_OPTS="-f rtsp -rtsp_transport tcp"
RTMP_PLAY_URL=rtmp://127.0.0.1:$LF_RTMP_PORT/live/$STREAM
[[ ${LF_FLV_ONLY:-0} == 1 ]] && RTMP_PLAY_URL=""
FLV_PLAY_URL=http://127.0.0.1:$LF_HTTP_PORT/live/$STREAM.flv
HLS_URL=http://127.0.0.1:$LF_HTTP_PORT/live/$STREAM/index.m3u8

target_start() {
  port_free 127.0.0.1:$LF_RTMP_PORT || return 1
  port_free 127.0.0.1:$LF_HTTP_PORT || return 1
  local d=$RUN/livefuse-$NAME
  rm -rf "$d"; mkdir -p "$d"
  {
    echo "data_dir: \"$d/data\""
    echo "log_level: info"
    echo "rtmp: {addr: \"127.0.0.1:$LF_RTMP_PORT\", max_conns_per_ip: -1}"
    echo "rtsp: {addr: \"127.0.0.1:$LF_RTSP_PORT\", udp_rtp_addr: \"\", udp_rtcp_addr: \"\"}"
    echo "http: {addr: \"127.0.0.1:$LF_HTTP_PORT\"}"
    echo "lms: {api_addr: \"127.0.0.1:$LF_API_PORT\", api_token: \"bench-api-token\"}"
    [[ -n $LF_COALESCE ]] && echo "origin: {flv_coalesce: $LF_COALESCE}"
    echo "streams:"
    echo "  - {app: live, name: $STREAM, publish_token: \"$LF_TOKEN\", enabled: true}"
  } >"$RUN/livefuse-$NAME.yaml"
  (cd "$d" && exec $(pin_server) "$LF_BIN" serve --config "$RUN/livefuse-$NAME.yaml" >"$LOGS/livefuse-$NAME.log" 2>&1) &
  SERVER_PIDS=$!
  wait_port 127.0.0.1:$LF_RTMP_PORT 60 && wait_port 127.0.0.1:$LF_HTTP_PORT 30
}
target_stop() { [[ -n $SERVER_PIDS ]] && stop_pids $SERVER_PIDS; SERVER_PIDS=""; }
