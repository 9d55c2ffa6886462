#!/usr/bin/env bash
# test_cluster.sh — nginx (Debian's) in front of two latentd replicas on
# loopback, started by scripts/run-cluster.sh with config/nginx/latentd.conf
# (make test-cluster; part of make test).  Checks, in order:
#   0. systemd/latentd@.service passes systemd-analyze verify;
#   1. samples through nginx (and from each replica) are byte-identical to
#      those of a lone daemon for the same seed;
#   2. a model uploaded through nginx (PUT application/octet-stream, the GAN:
#      over max_body_bytes) becomes servable on both replicas — SKIPPED
#      while that route answers 415;
#   3. a job submitted through nginx streams its events through nginx to its
#      end event; nginx routes its id to its replica; the other replica
#      serves the model the job wrote, after its rescan;
#   4. one replica killed (SIGKILL) under a load of GETs: no request fails.
# Ports are chosen free at run time; everything is bounded (about 30 s).
# Usage: tests/cluster/test_cluster.sh [BIN] (default build/latentd)
set -uo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-build/latentd}
ADMIN=admin-token-fedcba9876543210abcd
fails=0
skips=0
ok() { echo "  ok: $*"; }
bad() { echo "  FAILED: $*"; fails=$((fails + 1)); }
skip() { echo "  SKIPPED: $*"; skips=$((skips + 1)); }

command -v nginx >/dev/null || { echo "cluster: SKIPPED: nginx is not installed"; exit 0; }
[ -x "$bin" ] || { echo "cluster: $bin missing"; exit 1; }

tmp=$(mktemp -d /tmp/latentd-cluster-test.XXXXXX)
chmod 0755 "$tmp"
cluster_pid=
single_pid=
cleanup() {
    [ -n "$cluster_pid" ] && kill -TERM "$cluster_pid" 2>/dev/null && wait "$cluster_pid" 2>/dev/null
    [ -n "$single_pid" ] && kill -TERM "$single_pid" 2>/dev/null && wait "$single_pid" 2>/dev/null
    if [ "$fails" -eq 0 ]; then rm -rf "$tmp"; else echo "cluster: files kept in $tmp"; fi
}
trap cleanup EXIT

read -r PN P1 P2 PS < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(4)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
mkdir -p "$tmp/models"
cp models/fashion-vae.safetensors models/fashion-gan.safetensors "$tmp/models/"
printf '%s\n' "$ADMIN" >"$tmp/admin"
chmod 0600 "$tmp/admin"
args="--admin-token-file $tmp/admin --set rescan_interval=1 --set access_log=no"

# ---- the cluster, and a lone daemon for reference ----
CLUSTER_DIR=$tmp/run CLUSTER_PORT=$PN CLUSTER_PORTS="$P1 $P2" CLUSTER_MODELS=$tmp/models \
    LATENTD=$bin LATENTD_ARGS="$args" scripts/run-cluster.sh 2 >"$tmp/cluster.out" 2>&1 &
cluster_pid=$!
mkdir -p "$tmp/single"
# shellcheck disable=SC2086
"$bin" serve --config config/latentd.conf --port "$PS" --models "$tmp/models" \
    --state "$tmp/single/state" $args >"$tmp/single/log" 2>&1 &
single_pid=$!
for ((i = 0; i < 300; i++)); do
    grep -q "cluster ready" "$tmp/cluster.out" && curl -fs -o /dev/null "http://127.0.0.1:$PS/readyz" && break
    kill -0 "$cluster_pid" 2>/dev/null || break
    sleep 0.1
done
if ! grep -q "cluster ready" "$tmp/cluster.out"; then
    cat "$tmp/cluster.out"
    bad "the cluster did not start"
    exit 1
fi
echo "cluster: nginx :$PN, replicas :$P1 :$P2, lone daemon :$PS"

get() { curl -sS --max-time 20 "$@"; }

# ---- 0. the systemd template unit parses (not started) ----
if command -v systemd-analyze >/dev/null; then
    sed "s|/usr/local/bin/latentd|$(realpath "$bin")|g" systemd/latentd@.service >"$tmp/latentd@1.service"
    if out=$(systemd-analyze verify "$tmp/latentd@1.service" 2>&1) && [ -z "$out" ]; then
        ok "systemd-analyze verify latentd@1.service: clean"
    else
        bad "systemd-analyze verify latentd@1.service: $out"
    fi
else
    skip "systemd-analyze is not installed: latentd@.service not verified"
fi

# ---- 1. byte-identical samples ----
q="/v1/models/fashion-vae/sample.png?n=16&seed=7&cols=4"
get -o "$tmp/ref.png" "http://127.0.0.1:$PS$q"
get -o "$tmp/ref.json" -H 'Content-Type: application/json' -d '{"n":3,"seed":11}' \
    "http://127.0.0.1:$PS/v1/models/fashion-gan/sample"
same=1
for p in "$PN" "$PN" "$PN" "$PN" "$P1" "$P2"; do
    get -o "$tmp/got.png" "http://127.0.0.1:$p$q"
    cmp -s "$tmp/ref.png" "$tmp/got.png" || { same=0; bad "PNG from :$p differs from the lone daemon's"; }
    get -o "$tmp/got.json" -H 'Content-Type: application/json' -d '{"n":3,"seed":11}' \
        "http://127.0.0.1:$p/v1/models/fashion-gan/sample"
    cmp -s "$tmp/ref.json" "$tmp/got.json" || { same=0; bad "JSON from :$p differs from the lone daemon's"; }
done
[ -s "$tmp/ref.png" ] || { same=0; bad "the lone daemon sent no PNG"; }
[ "$same" = 1 ] && ok "samples through nginx and from each replica are byte-identical to a lone daemon's"

# ---- 2. upload through nginx, servable on both ----
put() { # $1: file; prints the status, the body goes to $tmp/put.out
    get -o "$tmp/put.out" -w '%{http_code}' -X PUT -H "Authorization: Bearer $ADMIN" \
        -H 'Content-Type: application/octet-stream' --data-binary "@$1" \
        "http://127.0.0.1:$PN/v1/models/uploaded"
}
# a small body first: without the upload route, 415 (a large one would meet
# max_body_bytes first)
printf 'not a model' >"$tmp/small"
st=$(put "$tmp/small")
[ "$st" != 415 ] && st=$(put models/fashion-gan.safetensors)
if [ "$st" = 415 ]; then
    skip "PUT /v1/models/{name} with application/octet-stream answers 415 (the upload route is not in this build)"
elif [ "$st" != 200 ] && [ "$st" != 201 ]; then
    bad "upload through nginx: $st $(cat "$tmp/put.out")"
else
    for p in "$P1" "$P2"; do
        up=0
        for ((i = 0; i < 100; i++)); do
            [ "$(get -o /dev/null -w '%{http_code}' "http://127.0.0.1:$p/v1/models/uploaded/sample.png?n=1")" = 200 ] && { up=1; break; }
            sleep 0.1
        done
        [ "$up" = 1 ] || bad "the uploaded model is not served on :$p after 10 s"
    done
    [ "$up" = 1 ] && ok "a model uploaded through nginx is served by both replicas"
fi

# ---- 3. a job through nginx: its events stream through nginx to the end ----
spec='{"kind":"vae","model":"trained","data":"fashion-mnist","limit":2000,"arch":{"hidden":[32],"z":4},"train":{"epochs":1,"batch":64,"seed":3}}'
id=$(get -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' -d "$spec" \
    "http://127.0.0.1:$PN/v1/jobs" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("id",""))')
case "$id" in
j-r1-* | j-r2-*)
    get -N --max-time 60 -H "Authorization: Bearer $ADMIN" -o "$tmp/events" \
        "http://127.0.0.1:$PN/v1/jobs/$id/events"
    if grep -q '^event: end' "$tmp/events" && grep -q '"state":"succeeded"' "$tmp/events" &&
        [ "$(grep -c '^event: progress' "$tmp/events")" -ge 2 ]; then
        ok "job $id: $(grep -c '^event: ' "$tmp/events") events through nginx, ending with end/succeeded"
    else
        bad "job $id: events through nginx: $(tail -c 600 "$tmp/events")"
    fi
    routed=1
    for _ in 1 2 3 4; do
        [ "$(get -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $ADMIN" "http://127.0.0.1:$PN/v1/jobs/$id")" = 200 ] || routed=0
    done
    [ "$routed" = 1 ] && ok "GET /v1/jobs/$id through nginx reaches its replica every time" ||
        bad "GET /v1/jobs/$id through nginx did not always reach its replica"
    # the replica that did not train it serves the model after a rescan
    other=$P2
    [ "${id#j-r2-}" != "$id" ] && other=$P1
    sha=$(sha256sum "$tmp/models/trained.safetensors" 2>/dev/null | cut -d' ' -f1)
    served=
    for ((i = 0; i < 100; i++)); do
        served=$(get "http://127.0.0.1:$other/v1/models/trained" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("sha256",""))' 2>/dev/null)
        [ -n "$served" ] && break
        sleep 0.1
    done
    [ -n "$served" ] && [ "$served" = "$sha" ] && ok "the other replica (:$other) serves the trained model (sha256 ${sha:0:12})" ||
        bad "the other replica (:$other) serves '$served', the file is '$sha'"
    ;;
*) bad "job submit through nginx gave no replica id: '$id'" ;;
esac

# ---- 4. kill a replica under load: nginx retries every GET ----
load() { # $1: requests; prints one status per line
    for ((i = 0; i < $1; i++)); do
        curl -s -o /dev/null --max-time 20 -w '%{http_code}\n' "http://127.0.0.1:$PN/v1/models/fashion-vae/sample.png?n=4&seed=$i"
    done
}
loaders=()
for w in 1 2 3 4; do
    load 80 >"$tmp/load.$w" &
    loaders+=($!)
done
# kill once the load is under way (a quarter of it done), not on a timer
for ((i = 0; i < 200; i++)); do
    [ "$(cat "$tmp"/load.* | wc -l)" -ge 80 ] && break
    sleep 0.05
done
kill -KILL "$(cat "$tmp/run/r2/pid")"
before=$(cat "$tmp"/load.* | wc -l)
wait "${loaders[@]}"
total=$(cat "$tmp"/load.* | wc -l)
failed=$(cat "$tmp"/load.* | grep -vc '^200$')
if [ "$total" -eq 320 ] && [ "$failed" -eq 0 ] && [ "$before" -lt 320 ]; then
    ok "replica r2 killed after $before of $total GETs through nginx: none failed"
else
    bad "replica r2 killed under load: $failed of $total GETs failed ($(sort "$tmp"/load.* | uniq -c | tr '\n' ' '))"
fi

echo "cluster: $fails failed, $skips skipped"
[ "$fails" -eq 0 ]
