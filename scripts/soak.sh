#!/usr/bin/env bash
# soak.sh — `make soak`: wrk drives every route of `latentd serve` for
# SOAK_SECONDS (default 600) and the daemon must neither grow nor fail.
#
# The daemon runs with the shipped models (models/*.safetensors, copied into
# a temporary folder), a temporary state folder and an admin token.  wrk runs
# scripts/soak.lua: every route with each of its formats (JSON, PNG, .npy),
# the jobs routes (a small job submitted, read and cancelled now and then), a
# model reload now and then, and deliberate bad requests that must each get
# their one intended 4xx.  Every response is tallied by request kind and
# status.  The daemon's VmRSS is read from /proc every SOAK_RSS_EVERY seconds.
#
# Targets (the script exits 1 when one is missed, after the summary):
#   - every response has the status its kind must get (2xx for the routes,
#     the intended 4xx for the bad requests), with the promised Content-Type;
#     no request lost to a socket error, and every kind answered at least once;
#   - RSS growth after the warm-up stays under SOAK_RSS_LIMIT_KB (2048):
#     the floor of RSS (its least value in a window of 10% of the run, at
#     least 30 s) at the end minus the floor right after the warm-up;
#   - afterwards /healthz answers and SIGTERM stops the daemon within
#     shutdown_timeout + 5 s with exit status 0; no sanitizer report in its log.
#
# Requests per second are printed but are not a speed figure: wrk, the
# daemon and a training job share the same CPUs (see make bench-serve).
#
# Environment:
#   SOAK_SECONDS       duration of the wrk run (default 600)
#   SOAK_WARMUP        seconds of warm-up not held to the RSS target
#                      (default SOAK_SECONDS / 10)
#   SOAK_THREADS       wrk threads, each with one connection (default 4)
#   SOAK_RSS_EVERY     seconds between RSS samples (default 2)
#   SOAK_RSS_LIMIT_KB  the RSS growth target in KiB (default 2048)
#   SOAK_JOB_EVERY     seconds between training jobs (default 20)
#   SOAK_JOB_CANCEL    seconds a job runs before it is cancelled (default 2)
#   SOAK_RELOAD_EVERY  seconds between model reloads (default 30)
#   SOAK_KEEP=1        keep the temporary folder (daemon log, RSS samples)
#   MODELS_DIR         folder with fashion-vae and fashion-gan (default models)
#   LATENTD            the binary (default build/latentd; build/asan/latentd
#                      checks for sanitizer reports, but its RSS is not the
#                      plain daemon's)
#   CONFIG             its configuration file (default config/latentd.conf)
set -euo pipefail
cd "$(dirname "$0")/.."

SOAK_SECONDS=${SOAK_SECONDS:-600}
SOAK_WARMUP=${SOAK_WARMUP:-$((SOAK_SECONDS / 10))}
SOAK_THREADS=${SOAK_THREADS:-4}
SOAK_RSS_EVERY=${SOAK_RSS_EVERY:-2}
SOAK_RSS_LIMIT_KB=${SOAK_RSS_LIMIT_KB:-2048}
export SOAK_JOB_EVERY=${SOAK_JOB_EVERY:-20}
export SOAK_JOB_CANCEL=${SOAK_JOB_CANCEL:-2}
export SOAK_RELOAD_EVERY=${SOAK_RELOAD_EVERY:-30}
MODELS_DIR=${MODELS_DIR:-models}
LATENTD=${LATENTD:-build/latentd}
CONFIG=${CONFIG:-config/latentd.conf}
PY=/usr/bin/python3
VAE=fashion-vae
GAN=fashion-gan
FMNIST=/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz

die() { echo "soak: $*" >&2; exit 2; }
command -v wrk >/dev/null || die "wrk is not installed (apt-get install wrk)"
command -v curl >/dev/null || die "curl is not installed"
[ -x "$LATENTD" ] || die "$LATENTD is missing; run make first"
[ -f "$FMNIST" ] || die "$FMNIST is missing (apt-get install dataset-fashion-mnist)"
for m in $VAE $GAN; do
    [ -f "$MODELS_DIR/$m.safetensors" ] || die "$MODELS_DIR/$m.safetensors is missing"
done
[[ "$SOAK_SECONDS" =~ ^[0-9]+$ && "$SOAK_SECONDS" -ge 10 ]] || die "SOAK_SECONDS must be an integer >= 10"
[[ "$SOAK_WARMUP" =~ ^[0-9]+$ && "$SOAK_WARMUP" -lt "$SOAK_SECONDS" ]] ||
    die "SOAK_WARMUP must be an integer below SOAK_SECONDS"

work=$(mktemp -d /tmp/latentd-soak.XXXXXX)
lpid=""
spid=""
cleanup() {
    [ -n "$spid" ] && kill "$spid" 2>/dev/null
    [ -n "$lpid" ] && kill -9 "$lpid" 2>/dev/null
    wait 2>/dev/null
    if [ "${SOAK_KEEP:-0}" = 1 ]; then echo "soak: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

# --- the daemon: shipped models and configuration, admin token, free port -----
mkdir -p "$work/models" "$work/state"
cp "$MODELS_DIR"/*.safetensors "$work/models/"
export SOAK_ADMIN_TOKEN
SOAK_ADMIN_TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
(umask 077 && printf '%s\n' "$SOAK_ADMIN_TOKEN" >"$work/admin.token")
port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
base="http://127.0.0.1:$port"
"$LATENTD" serve --config "$CONFIG" --models "$work/models" --state "$work/state" \
    --admin-token-file "$work/admin.token" --bind 127.0.0.1 --port "$port" 2>"$work/latentd.log" &
lpid=$!
for ((i = 0; i < 600; i++)); do
    curl -fsS -o /dev/null "$base/readyz" 2>/dev/null && break
    kill -0 "$lpid" 2>/dev/null || { cat "$work/latentd.log" >&2; die "latentd exited at start"; }
    sleep 0.05
done
curl -fsS -o /dev/null "$base/readyz" || { cat "$work/latentd.log" >&2; die "latentd did not become ready"; }

latent() { curl -fsS "$base/v1/models/$1" | grep -o '"latent_size":[0-9]*' | cut -d: -f2; }
export SOAK_VAE=$VAE SOAK_GAN=$GAN SOAK_VAE_Z SOAK_GAN_Z SOAK_PNG SOAK_IMAGE
SOAK_VAE_Z=$(latent $VAE)
SOAK_GAN_Z=$(latent $GAN)
# the first Fashion-MNIST test image, as a base64 PNG and as 784 values
read -r SOAK_PNG SOAK_IMAGE < <("$PY" - "$FMNIST" <<'EOF'
import base64, gzip, struct, sys, zlib
with gzip.open(sys.argv[1]) as f:
    f.read(16)
    px = f.read(28 * 28)
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
raw = b"".join(b"\0" + px[r * 28:(r + 1) * 28] for r in range(28))
png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0)) +
       chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
print(base64.b64encode(png).decode(), "[" + ",".join("%.4f" % (p / 255) for p in px) + "]")
EOF
)

# --- RSS samples: "seconds-since-start KiB" ---------------------------------------
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$lpid/status" 2>/dev/null || echo 0; }
t0=$(date +%s.%N)
(
    while :; do
        echo "$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN {printf "%.1f", a - b}') $(rss_kb)"
        sleep "$SOAK_RSS_EVERY"
    done
) >"$work/rss" &
spid=$!

echo "soak: ${SOAK_SECONDS}s, warm-up ${SOAK_WARMUP}s, $SOAK_THREADS connections, $(nproc) CPUs," \
    "load average $(cut -d' ' -f1-3 /proc/loadavg), daemon pid $lpid on port $port" >&2
wrk -t"$SOAK_THREADS" -c"$SOAK_THREADS" -d"${SOAK_SECONDS}s" --timeout 30s -s scripts/soak.lua \
    "$base/" >"$work/wrk.out" 2>&1 || true
sleep "$SOAK_RSS_EVERY"
kill "$spid" 2>/dev/null || true
wait "$spid" 2>/dev/null || true
spid=""
rss_idle=$(rss_kb)

# --- after the load: still serving, and a clean stop -------------------------------
fail=0
health_after=ok
curl -fsS -m 10 -o /dev/null "$base/healthz" || { health_after=FAIL; fail=1; }
shutdown_timeout=$(awk -F= '$1 ~ /^ *shutdown_timeout *$/ {gsub(/ /, "", $2); print $2}' "$CONFIG")
stop_limit=$((${shutdown_timeout:-10} + 5))
kill -TERM "$lpid"
stop_start=$(date +%s.%N)
stop=FAIL
for ((i = 0; i < stop_limit * 10; i++)); do
    kill -0 "$lpid" 2>/dev/null || break
    sleep 0.1
done
if ! kill -0 "$lpid" 2>/dev/null; then
    st=0
    wait "$lpid" || st=$?
    stop="exit $st after $(awk -v a="$(date +%s.%N)" -v b="$stop_start" 'BEGIN {printf "%.1f", a - b}') s"
    [ "$st" = 0 ] || fail=1
else
    stop="still running after ${stop_limit} s"
    fail=1
fi
lpid_done=$lpid
lpid=""
sanitizer=none
if grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:' "$work/latentd.log"; then
    sanitizer="reports in the daemon log (SOAK_KEEP=1 keeps it)"
    fail=1
fi

# --- summary ----------------------------------------------------------------------
grep -q '^WRK ' "$work/wrk.out" || { cat "$work/wrk.out" >&2; die "wrk did not finish"; }
echo
echo "soak: latentd $(git rev-parse --short HEAD 2>/dev/null || echo '?') pid $lpid_done," \
    "$(date -u +%Y-%m-%dT%H:%MZ), ${SOAK_SECONDS}s with $SOAK_THREADS connections," \
    "load average after $(cut -d' ' -f1-3 /proc/loadavg)"
echo
awk '
$1 == "TALLY" {
    kind = $2; st = $3; n = $4
    if (!(kind in seen)) { order[++k] = kind; seen[kind] = 1 }
    total[kind] += n
    if ($5 == "ok") good[kind] += n
    else { bad[kind] = bad[kind] sprintf("%s%s x%d", (bad[kind] == "" ? "" : ", "), st, n); nbad += n }
    if (st ~ /^[0-9]+$/) codes[kind] = codes[kind] sprintf("%s%s", (codes[kind] == "" ? "" : "/"), st)
}
$1 == "WRK" { req = $2; dur = $3 / 1e6; econn = $4; eread = $5; ewrite = $6; etime = $7 }
END {
    printf "%-22s %9s %9s  %-9s %s\n", "request kind", "answered", "as meant", "statuses", "unintended"
    for (i = 1; i <= k; i++) {
        kd = order[i]
        printf "%-22s %9d %9d  %-9s %s\n", kd, total[kd], good[kd], codes[kd], (bad[kd] == "" ? "-" : bad[kd])
    }
    printf "\nrequests %d in %.0f s (%.0f/s, shared CPUs: not a speed figure); socket errors: connect %d, read %d, write %d, timeout %d\n",
        req, dur, req / dur, econn, eread, ewrite, etime
    printf "unintended responses: %d\n", nbad
    exit (nbad > 0 || econn + eread + ewrite + etime > 0) ? 1 : 0
}' "$work/wrk.out" || fail=1

# The target is on the floor of RSS: the least RSS of the last window of the
# run against that of the first window after the warm-up (a window is 10% of
# the run, at least 30 s).  A leak raises the floor; a training job or a
# reload in progress (two models alive at once) only raises peaks, which are
# shown but not held to the target.
awk -v warm="$SOAK_WARMUP" -v dur="$SOAK_SECONDS" -v limit="$SOAK_RSS_LIMIT_KB" -v idle="$rss_idle" '
$2 > 0 { t[++n] = $1; r[n] = $2 }
END {
    win = dur / 10 < 30 ? 30 : dur / 10
    for (i = 1; i <= n; i++) {
        if (t[i] < warm) { if (r[i] > wmax) wmax = r[i]; continue }
        if (amax == "" || r[i] > amax) amax = r[i]
        if (t[i] < warm + win && (f0 == "" || r[i] < f0)) f0 = r[i]
        if (t[i] >= dur - win && t[i] <= dur && (f1 == "" || r[i] < f1)) f1 = r[i]
        m++; sx += t[i]; sy += r[i]; sxx += t[i] * t[i]; sxy += t[i] * r[i]
    }
    if (m < 4 || f0 == "" || f1 == "") { print "RSS: too few samples after the warm-up"; exit 1 }
    growth = f1 - f0
    slope = (m * sxy - sx * sy) / (m * sxx - sx * sx) * 60
    printf "\nRSS (KiB): start %d, warm-up max %d; after it: max %d (%+d on the warm-up max), idle after the run %d\n",
        r[1], wmax, amax, amax - wmax, idle
    printf "RSS floor (least RSS in %d s windows): %d after the warm-up, %d at the end; trend %+.1f KiB/min over %d samples\n",
        win, f0, f1, slope, m
    printf "RSS growth after warm-up (floor): %d KiB (limit %d): %s\n", growth, limit, (growth < limit ? "ok" : "FAIL")
    exit growth < limit ? 0 : 1
}' "$work/rss" || fail=1

echo "after the run: /healthz $health_after; SIGTERM: $stop; sanitizer: $sanitizer"
if [ "$fail" = 0 ]; then echo "soak: PASS"; else echo "soak: FAIL"; exit 1; fi
