#!/usr/bin/env bash
# run-dual.sh starts a two-unit livefuse deployment on this machine:
#   unit a: RTMP :1935, RTSP :8554, HTTP :8080, API :9090 (embedded etcd on 127.0.0.1:2379)
#   unit b: RTMP :1936, RTSP :8555, HTTP :8081, API :9091 (uses unit a's etcd)
#   an nginx edge on :8088 in front of both (unit a primary, unit b backup), when nginx is installed
# Each unit relays the feeds it accepts to the other one, so both hold main and backup hot.
# Ctrl-C stops everything (each unit drains its players for up to DRAIN_TIMEOUT,
# default 5s). Data and logs go to ./livefuse-dual (override with DUAL_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/livefuse}
DIR=${DUAL_DIR:-$PWD/livefuse-dual}
mkdir -p "$DIR"
secret_file="$DIR/secrets"
if [ ! -f "$secret_file" ]; then
  umask 077
  {
    echo "RELAY_SECRET=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    echo "API_TOKEN=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    echo "PUBLISH_TOKEN=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  } > "$secret_file"
fi
# shellcheck disable=SC1090
. "$secret_file"

unit_config() { # name rtmp rtsp udp http api etcd-line
  cat <<YAML
data_dir: $DIR/$1
unit: $1
units:
  - {name: a, relay: "127.0.0.1:1935"}
  - {name: b, relay: "127.0.0.1:1936"}
relay_secret: "$RELAY_SECRET"
rtmp: {addr: ":$2"}
rtsp: {addr: ":$3", udp_rtp_addr: ":$4", udp_rtcp_addr: ":$(( $4 + 1 ))"}
http: {addr: ":$5"}
# Ctrl-C drains each unit: it stops once its players have left, or after this.
drain_timeout: ${DRAIN_TIMEOUT:-5s}
lms:
  api_addr: "127.0.0.1:$6"
  api_token: "$API_TOKEN"
  etcd: {$7}
streams:
  - {app: live, name: demo, publish_token: "$PUBLISH_TOKEN"}
YAML
}
unit_config a 1935 8554 8000 8080 9090 'listen: "127.0.0.1:2379"' > "$DIR/a.yaml"
unit_config b 1936 8555 8002 8081 9091 'endpoints: ["127.0.0.1:2379"]' > "$DIR/b.yaml"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$BIN" serve --config "$DIR/a.yaml" > "$DIR/a.out" 2> "$DIR/a.log" & pids+=($!)
for _ in $(seq 1 100); do curl -fs http://127.0.0.1:9090/readyz >/dev/null 2>&1 && break; sleep 0.1; done
"$BIN" serve --config "$DIR/b.yaml" > "$DIR/b.out" 2> "$DIR/b.log" & pids+=($!)
for _ in $(seq 1 100); do curl -fs http://127.0.0.1:9091/readyz >/dev/null 2>&1 && break; sleep 0.1; done

edge=""
if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
  mkdir -p "$DIR/edge/tmp"
  sed -e "s#@PREFIX@#$DIR/edge#g" -e 's#@LISTEN@#127.0.0.1:8088#' \
      -e 's#@UNIT_A@#127.0.0.1:8080#' -e 's#@UNIT_B@#127.0.0.1:8081#' \
      deploy/nginx/livefuse-edge.conf.template > "$DIR/edge/nginx.conf"
  "$NGINX" -p "$DIR/edge" -c "$DIR/edge/nginx.conf" -e "$DIR/edge/error.log" & pids+=($!)
  edge="http://127.0.0.1:8088"
fi

cat <<TXT
livefuse units a and b are up (logs in $DIR/a.log and $DIR/b.log).

Push main to unit a and backup to unit b:
  ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=25 -f lavfi -i sine -c:v libx264 -preset veryfast -g 50 -c:a aac \\
    -f flv 'rtmp://127.0.0.1:1935/live/demo?token=$PUBLISH_TOKEN'
  ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=25 -f lavfi -i sine -c:v libx264 -preset veryfast -g 50 -c:a aac \\
    -f flv 'rtmp://127.0.0.1:1936/live/demo?token=$PUBLISH_TOKEN&feed=backup'

Play from either unit, or through the edge:
  ffplay http://127.0.0.1:8080/live/demo.flv      ffplay http://127.0.0.1:8081/live/demo/index.m3u8
TXT
[ -n "$edge" ] && echo "  ffplay $edge/live/demo.flv        ffplay $edge/live/demo/index.m3u8"
cat <<TXT

Switch feeds on both units, and see every unit's state:
  curl -H 'Authorization: Bearer $API_TOKEN' -d '{"feed":"backup"}' http://127.0.0.1:9090/api/v1/streams/live/demo/switch
  curl -H 'Authorization: Bearer $API_TOKEN' http://127.0.0.1:9091/api/v1/streams/live/demo
Ctrl-C stops both units and the edge.
TXT
wait
