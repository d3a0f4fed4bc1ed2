#!/usr/bin/env bash
# run-dual.sh starts a two-unit livefuse deployment on this machine, every
# listener on HOST (default 127.0.0.1) and every port overridable:
#   unit a:  RTMP $A_RTMP (1935), RTSP $A_RTSP (8554), HTTP $A_HTTP (8080), API $A_API (9090),
#            etcd member a: client $A_ETCD (2379), peer $A_PEER (2380)
#   unit b:  RTMP $B_RTMP (1936), RTSP $B_RTSP (8555), HTTP $B_HTTP (8081), API $B_API (9091),
#            etcd member b: client $B_ETCD (2381), peer $B_PEER (2382)
#   witness: etcd member w: client $W_ETCD (2383), peer $W_PEER (2384), health on $W_API (9092)
#   an nginx edge on $EDGE (8088) in front of both (unit a primary, unit b backup), when nginx is installed
# The three etcd members form one cluster, so the control plane survives the loss of any one
# process. Each unit relays the feeds it accepts to the other one, so both hold main and backup
# hot. Ctrl-C stops everything (each unit drains its players for up to DRAIN_TIMEOUT, default
# 5s). Data and logs go to ./livefuse-dual (override with DUAL_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/livefuse}
DIR=${DUAL_DIR:-$PWD/livefuse-dual}
HOST=${HOST:-127.0.0.1}
A_RTMP=${A_RTMP:-1935} A_RTSP=${A_RTSP:-8554} A_UDP=${A_UDP:-8000} A_HTTP=${A_HTTP:-8080} A_API=${A_API:-9090}
B_RTMP=${B_RTMP:-1936} B_RTSP=${B_RTSP:-8555} B_UDP=${B_UDP:-8002} B_HTTP=${B_HTTP:-8081} B_API=${B_API:-9091}
A_ETCD=${A_ETCD:-2379} A_PEER=${A_PEER:-2380} B_ETCD=${B_ETCD:-2381} B_PEER=${B_PEER:-2382}
W_ETCD=${W_ETCD:-2383} W_PEER=${W_PEER:-2384} W_API=${W_API:-9092} EDGE=${EDGE:-8088}
CLUSTER="a=http://$HOST:$A_PEER,b=http://$HOST:$B_PEER,w=http://$HOST:$W_PEER"
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

etcd_yaml() { # member client peer
  cat <<YAML
  etcd:
    name: $1
    listen: "$HOST:$2"
    peer_listen: "$HOST:$3"
    initial_cluster: "$CLUSTER"
YAML
}
unit_config() { # name rtmp rtsp udp http api etcd-client etcd-peer
  cat <<YAML
data_dir: $DIR/$1
unit: $1
units:
  - {name: a, relay: "$HOST:$A_RTMP"}
  - {name: b, relay: "$HOST:$B_RTMP"}
relay_secret: "$RELAY_SECRET"
rtmp: {addr: "$HOST:$2"}
rtsp: {addr: "$HOST:$3", udp_rtp_addr: "$HOST:$4", udp_rtcp_addr: "$HOST:$(( $4 + 1 ))"}
http: {addr: "$HOST:$5"}
# Ctrl-C drains each unit: it stops once its players have left, or after this.
drain_timeout: ${DRAIN_TIMEOUT:-5s}
lms:
  api_addr: "$HOST:$6"
  api_token: "$API_TOKEN"
$(etcd_yaml "$1" "$7" "$8")
streams:
  - {app: live, name: demo, publish_token: "$PUBLISH_TOKEN"}
YAML
}
unit_config a "$A_RTMP" "$A_RTSP" "$A_UDP" "$A_HTTP" "$A_API" "$A_ETCD" "$A_PEER" > "$DIR/a.yaml"
unit_config b "$B_RTMP" "$B_RTSP" "$B_UDP" "$B_HTTP" "$B_API" "$B_ETCD" "$B_PEER" > "$DIR/b.yaml"
cat > "$DIR/w.yaml" <<YAML
data_dir: $DIR/w
lms:
  api_addr: "$HOST:$W_API"
$(etcd_yaml w "$W_ETCD" "$W_PEER")
YAML

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# The members become ready together, once a quorum of them is up.
"$BIN" serve --config "$DIR/a.yaml" > "$DIR/a.out" 2> "$DIR/a.log" & pids+=($!)
"$BIN" serve --config "$DIR/b.yaml" > "$DIR/b.out" 2> "$DIR/b.log" & pids+=($!)
"$BIN" witness --config "$DIR/w.yaml" > "$DIR/w.out" 2> "$DIR/w.log" & pids+=($!)
for port in "$A_API" "$B_API" "$W_API"; do
  for _ in $(seq 1 600); do curl -fs "http://$HOST:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
done

edge=""
if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
  mkdir -p "$DIR/edge/tmp"
  sed -e "s#@PREFIX@#$DIR/edge#g" -e "s#@LISTEN@#$HOST:$EDGE#" \
      -e "s#@UNIT_A@#$HOST:$A_HTTP#" -e "s#@UNIT_B@#$HOST:$B_HTTP#" \
      deploy/nginx/livefuse-edge.conf.template > "$DIR/edge/nginx.conf"
  "$NGINX" -p "$DIR/edge" -c "$DIR/edge/nginx.conf" -e "$DIR/edge/error.log" & pids+=($!)
  edge="http://$HOST:$EDGE"
fi

cat <<TXT
livefuse units a and b and the etcd witness are up (logs in $DIR/a.log, $DIR/b.log, $DIR/w.log).

Push main to unit a and backup to unit b:
  ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=25 -f lavfi -i sine -c:v libx264 -preset veryfast -g 50 -c:a aac \\
    -f flv 'rtmp://$HOST:$A_RTMP/live/demo?token=$PUBLISH_TOKEN'
  ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=25 -f lavfi -i sine -c:v libx264 -preset veryfast -g 50 -c:a aac \\
    -f flv 'rtmp://$HOST:$B_RTMP/live/demo?token=$PUBLISH_TOKEN&feed=backup'

Play from either unit, or through the edge:
  ffplay http://$HOST:$A_HTTP/live/demo.flv      ffplay http://$HOST:$B_HTTP/live/demo/index.m3u8
TXT
[ -n "$edge" ] && echo "  ffplay $edge/live/demo.flv        ffplay $edge/live/demo/index.m3u8"
cat <<TXT

Switch feeds on both units, and see every unit's state:
  curl -H 'Authorization: Bearer $API_TOKEN' -d '{"feed":"backup"}' http://$HOST:$A_API/api/v1/streams/live/demo/switch
  curl -H 'Authorization: Bearer $API_TOKEN' http://$HOST:$B_API/api/v1/streams/live/demo
Either unit, or the witness, may be stopped: the other two keep the control plane.
Ctrl-C stops both units, the witness and the edge.
TXT
wait
