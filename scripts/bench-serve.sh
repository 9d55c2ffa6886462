#!/usr/bin/env bash
# bench-serve.sh — `make bench-serve`: HTTP serving throughput and latency of
# `latentd serve` against the same models served by FastAPI + uvicorn +
# PyTorch (bench/serve_torch.py), measured the same way with wrk.
#
# For each model, endpoint (sample n=1 as JSON, sample n=1 as PNG, decode one
# z as JSON, decode one z as .npy in and .npy out, the same two with 16 rows
# of z a request (the batched point: a client that needs speed sends
# batches), and latentd alone: /v2 infer of one z and of 16 with binary
# tensors both ways, and sample n=16 as JSON without and
# with Accept-Encoding: gzip, with its bytes on the wire) and connection count (1,
# 16, 64): requests/s, p50 and p99
# latency, and non-2xx responses; then the latentd/PyTorch ratio of req/s and
# the daemon's resident memory after the run.  Then, with one training job
# running in the daemon (a GAN, submitted to POST /v1/jobs and cancelled at
# the end), `sample` again (JSON and PNG), and once more idle after the job:
# its p99 against the mean of the idle p99s before and after.  Last, nginx
# in front of two replicas (scripts/run-cluster.sh, config/nginx/latentd.conf)
# against the lone daemon, `sample` at 64 connections: on one machine this
# shows what the proxy costs, not a speed-up.
#
# Environment:
#   MODELS_DIR   folder with the models (default models/; needs
#                fashion-vae.safetensors and fashion-gan.safetensors)
#   MODELS       which of them to measure (default "fashion-vae fashion-gan")
#   DURATION     seconds per measurement (default 5)
#   REPEAT       measurements per point (default 1); the table shows the one
#                with the median req/s, and non-2xx summed over all of them
#   CONNS        connection counts (default "1 16 64")
#   TORCH=0      skip the PyTorch peer
#   JOB=0        skip the measurement with a training job running
#   CLUSTER=0    skip nginx + 2 replicas
#   PIN=0        skip the decode rows with wrk on a CPU of its own
#   TORCH_WORKERS uvicorn worker processes (default: number of CPUs, like
#                latentd's http_threads = 0)
#   LATENTD      the binary (default build/latentd)
#   CONFIG       its configuration file (default config/latentd.conf)
#   HOSTPROBE    the host probe run beside every wrk run (default
#                build/hostprobe, bench/hostprobe.c): how much of the run's
#                time the virtual machine's CPUs were taken by the host
#                (the table's host% column, and each run's below it)
set -euo pipefail
cd "$(dirname "$0")/.."

MODELS_DIR=${MODELS_DIR:-models}
MODELS=${MODELS:-"fashion-vae fashion-gan"}
DURATION=${DURATION:-5}
REPEAT=${REPEAT:-1}
CONNS=${CONNS:-"1 16 64"}
TORCH=${TORCH:-1}
JOB=${JOB:-1}
CLUSTER=${CLUSTER:-1}
PIN=${PIN:-1}
WRAP=${WRAP:-} # a command wrk runs under (taskset for the pinned rows)
CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)
TORCH_WORKERS=${TORCH_WORKERS:-$NCPU}
LATENTD=${LATENTD:-build/latentd}
CONFIG=${CONFIG:-config/latentd.conf}
HOSTPROBE=${HOSTPROBE:-build/hostprobe}
PY=/usr/bin/python3

die() { echo "bench-serve: $*" >&2; exit 1; }
command -v wrk >/dev/null || die "wrk is not installed (apt-get install wrk)"
[ -x "$LATENTD" ] || die "$LATENTD is missing; run make first"
[ -x "$HOSTPROBE" ] || die "$HOSTPROBE is missing; run make build/hostprobe first"
for m in $MODELS; do
    [ -f "$MODELS_DIR/$m.safetensors" ] ||
        die "$MODELS_DIR/$m.safetensors is missing (set MODELS_DIR, or run make models)"
done
if [ "$TORCH" = 1 ] && ! "$PY" -c 'import torch, fastapi, uvicorn, PIL' 2>/dev/null; then
    echo "bench-serve: python3-torch/fastapi/uvicorn/pil missing; measuring latentd only" >&2
    TORCH=0
fi

work=$(mktemp -d /tmp/latentd-bench-serve.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_http() { # url seconds
    local url=$1 t=$2 i
    for ((i = 0; i < t * 20; i++)); do
        curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# Only the models under test, in a private folder, for both servers.
mkdir -p "$work/models" "$work/state"
for m in $MODELS; do cp "$MODELS_DIR/$m.safetensors" "$work/models/"; done # a link out of the model folder is refused

# --- latentd: the shipped configuration, on a free port ---------------------
# (an admin token only so that the training-job measurement can submit a job)
admin=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
(umask 077 && printf '%s\n' "$admin" >"$work/admin.token")
lport=$(free_port)
"$LATENTD" serve --config "$CONFIG" --models "$work/models" --state "$work/state" \
    --admin-token-file "$work/admin.token" --port "$lport" 2>"$work/latentd.log" &
lpid=$!
pids+=("$lpid")
wait_http "http://127.0.0.1:$lport/readyz" 30 || { cat "$work/latentd.log" >&2; die "latentd did not start"; }

# --- the PyTorch peer -----------------------------------------------------------
if [ "$TORCH" = 1 ]; then
    tport=$(free_port)
    LD_BENCH_MODELS="$work/models" "$PY" bench/serve_torch.py \
        --host 127.0.0.1 --port "$tport" --workers "$TORCH_WORKERS" >"$work/torch.log" 2>&1 &
    tpid=$!
    pids+=("$tpid")
    wait_http "http://127.0.0.1:$tport/healthz" 120 || { cat "$work/torch.log" >&2; die "the PyTorch server did not start"; }
fi

# wrk script: POST $BODY (or, for "@FILE", the bytes of FILE as
# application/x-npy), print one machine-readable RESULT line at the end.
cat >"$work/post.lua" <<'EOF'
wrk.method = "POST"
local body = os.getenv("BODY")
if body:sub(1, 1) == "@" then
    local f = assert(io.open(body:sub(2), "rb"))
    wrk.body = f:read("*a")
    f:close()
    local hlen = os.getenv("V2HLEN")
    if hlen and hlen ~= "" then -- /v2 binary: JSON head, then the tensor's bytes
        wrk.headers["Content-Type"] = "application/octet-stream"
        wrk.headers["Inference-Header-Content-Length"] = hlen
    else
        wrk.headers["Content-Type"] = "application/x-npy"
    end
else
    wrk.body = body
    wrk.headers["Content-Type"] = "application/json"
end
local ae = os.getenv("ACCEPT_ENCODING")
if ae and ae ~= "" then
    wrk.headers["Accept-Encoding"] = ae
end
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("RESULT %d %.1f %.1f %.1f %d %d\n", summary.requests,
        summary.requests / (summary.duration / 1e6), latency:percentile(50),
        latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
EOF

zvec() { # n values, deterministic
    "$PY" -c "import sys; n=int(sys.argv[1]); print('[' + ','.join('%.4f' % (((i*37)%17)/8.0-1) for i in range(n)) + ']')" "$1"
}

# bodies MODEL Z_DIM ROWS: the same ROWS latents (deterministic) as a JSON
# decode body, as a float32 .npy of shape (ROWS, Z_DIM) and as a /v2 infer
# body with the binary tensor extension, the images asked back as binary
# ($work/z<ROWS>-MODEL.{json,npy,v2}); prints the /v2 JSON head's length.
bodies() {
    "$PY" - "$@" "$work" <<'PYEOF'
import json, struct, sys
m, zd, rows, work = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
v = [float("%.4f" % (((i * 37) % 17) / 8.0 - 1)) for i in range(rows * zd)]
pre = "%s/z%d-%s" % (work, rows, m)
open(pre + ".json", "w").write(json.dumps({"z": [v[r * zd:(r + 1) * zd] for r in range(rows)]},
                                          separators=(",", ":")))
data = struct.pack("<%df" % len(v), *v)
head = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (rows, zd)
head += " " * (63 - (10 + len(head)) % 64) + "\n"
open(pre + ".npy", "wb").write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head.encode() + data)
h = json.dumps({"inputs": [{"name": "z", "datatype": "FP32", "shape": [rows, zd],
                            "parameters": {"binary_data_size": len(data)}}],
                "outputs": [{"name": "images", "parameters": {"binary_data": True}}]},
               separators=(",", ":")).encode()
open(pre + ".v2", "wb").write(h + data)
print(len(h))
PYEOF
}

# measure SERVER_NAME PORT MODEL ENDPOINT_LABEL PATH BODY
results="$work/results"
: >"$results"
measure() {
    local server=$1 port=$2 model=$3 label=$4 path=$5 body=$6 c t out r runs
    for c in $CONNS; do
        t=$((c < NCPU ? c : NCPU))
        # warm-up (connections, allocator, first-touch), then the measurement
        BODY=$body $WRAP wrk -t"$t" -c"$c" -d1s -s "$work/post.lua" "http://127.0.0.1:$port$path" >/dev/null 2>&1 || true
        p0=""
        case $server in latentd*) p0=$(passes "$port" "$model") ;; esac
        runs=""
        for ((r = 0; r < REPEAT; r++)); do
            # the host probe beside wrk, for as long: the time the CPUs
            # were not the guest's during this very run
            "$HOSTPROBE" "$DURATION" >"$work/hostprobe" 2>/dev/null &
            hp=$!
            cpu0=$(cpu_ticks "$server")
            out=$(BODY=$body $WRAP wrk -t"$t" -c"$c" -d"${DURATION}s" --timeout 10s -s "$work/post.lua" \
                "http://127.0.0.1:$port$path" 2>&1 | grep '^RESULT' || true)
            cpu1=$(cpu_ticks "$server")
            wait "$hp" || true
            [ -n "$out" ] || out="RESULT 0 0 0 0 0 0"
            # the daemon's CPU time a request, in microseconds (nan for the peer)
            us=$(awk -v a="$cpu0" -v b="$cpu1" -v n="$(echo "$out" | cut -d' ' -f2)" -v hz="$CLK_TCK" \
                'BEGIN {print (a == "" || n == 0) ? "nan" : sprintf("%.1f", (b - a) * 1e6 / hz / n)}')
            # + host lost %, probes over 3x the median %, slowest probe us
            host=$(awk '$1 == "HOSTPROBE" {print $2, $3, $5}' "$work/hostprobe")
            out="$out ${host:-nan nan nan} $us"
            printf '  %-11s %-12s %-12s c=%-3s %s\n' "$server" "$model" "$label" "$c" "${out#RESULT }" >&2
            runs="$runs${out#RESULT };"
        done
        # the run with the median req/s (errors summed over all runs), then
        # every run's p99 and host loss as "p99:lost,..."
        out=$("$PY" -c 'import sys
runs = [r.split() for r in sys.argv[1].split(";") if r.strip()]
every = ",".join("%s:%s" % (r[3], r[6]) for r in runs)
runs.sort(key=lambda r: float(r[1]))
m = runs[len(runs) // 2]
m[4] = str(sum(int(r[4]) for r in runs)); m[5] = str(sum(int(r[5]) for r in runs))
print(" ".join(m + [every]))' "$runs")
        echo "$server $model $label $c $out" >>"$results"
        if [ -n "$p0" ]; then echo "$server $model $label $c $p0 $(passes "$port" "$model")" >>"$work/passes"; fi
    done
}

# the daemon's CPU time so far in clock ticks (user + system, every thread);
# empty for the peer, whose workers are other processes
cpu_ticks() { # server
    case $1 in latentd*) awk '{print $14 + $15}' "/proc/$lpid/stat" ;; esac
}

# "batches requests" of MODEL's decoder so far, from latentd's /metrics: the
# requests a decode pass served over a point, which sets a GAN's cost a row
passes() { # port model
    curl -fsS "http://127.0.0.1:$1/metrics" 2>/dev/null | awk -v m="{model=\"$2\"}" '
        $1 == "latentd_decode_batches_total" m {b = $2}
        $1 == "latentd_decode_batch_requests_total" m {r = $2}
        END {print b + 0, r + 0}'
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "bench-serve: $NCPU CPUs, ${DURATION}s per point x $REPEAT, load average $load_before" >&2
for m in $MODELS; do
    zd=$(curl -fsS "http://127.0.0.1:$lport/v1/models/$m" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["latent_size"])')
    z=$(zvec "$zd")
    echo "{\"z\":[$z]}" >"$work/z-$m.json"
    # the same latent as a float32 .npy of shape (1, z_dim)
    "$PY" -c 'import json, struct, sys
z = json.loads(sys.argv[1])
head = "{\x27descr\x27: \x27<f4\x27, \x27fortran_order\x27: False, \x27shape\x27: (1, %d), }" % len(z)
head += " " * (63 - (10 + len(head)) % 64) + "\n"
sys.stdout.buffer.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head.encode()
                        + struct.pack("<%df" % len(z), *z))' "$z" >"$work/z-$m.npy"
    # the same latent for /v2 with the binary tensor extension, the images
    # asked back as binary: the JSON head's length, then the body
    v2hlen=$("$PY" -c 'import json, struct, sys
z = json.loads(sys.argv[1])
h = json.dumps({"inputs": [{"name": "z", "datatype": "FP32", "shape": [1, len(z)],
                            "parameters": {"binary_data_size": 4 * len(z)}}],
                "outputs": [{"name": "images", "parameters": {"binary_data": True}}]},
               separators=(",", ":")).encode()
open(sys.argv[2], "wb").write(h + struct.pack("<%df" % len(z), *z))
print(len(h))' "$z" "$work/v2-$m.bin")
    echo "$v2hlen" >"$work/v2hlen-$m"
    v2hlen16=$(bodies "$m" "$zd" 16)
    for server in latentd torch; do
        [ "$server" = torch ] && [ "$TORCH" != 1 ] && continue
        port=$lport
        [ "$server" = torch ] && port=$tport
        measure "$server" "$port" "$m" sample-json "/v1/models/$m/sample" '{"n":1,"seed":7}'
        measure "$server" "$port" "$m" sample-png "/v1/models/$m/sample" '{"n":1,"seed":7,"format":"png"}'
        measure "$server" "$port" "$m" decode-json "/v1/models/$m/decode" "{\"z\":[$z]}"
        measure "$server" "$port" "$m" decode-npy "/v1/models/$m/decode" "@$work/z-$m.npy"
        measure "$server" "$port" "$m" decode16-json "/v1/models/$m/decode" "$(cat "$work/z16-$m.json")"
        measure "$server" "$port" "$m" decode16-npy "/v1/models/$m/decode" "@$work/z16-$m.npy"
        if [ "$server" = latentd ]; then # the peer has no /v2
            export V2HLEN=$v2hlen
            measure "$server" "$port" "$m" v2-binary "/v2/models/$m/infer" "@$work/v2-$m.bin"
            export V2HLEN=$v2hlen16
            measure "$server" "$port" "$m" v2-binary16 "/v2/models/$m/infer" "@$work/z16-$m.v2"
            unset V2HLEN
            # n=16 JSON, plain and gzipped: req/s, and the body's bytes on the wire
            s16='{"n":16,"seed":7}'
            measure "$server" "$port" "$m" s16-json "/v1/models/$m/sample" "$s16"
            export ACCEPT_ENCODING=gzip
            measure "$server" "$port" "$m" s16-json-gzip "/v1/models/$m/sample" "$s16"
            unset ACCEPT_ENCODING
            for ae in identity gzip; do
                echo "$m $ae $(curl -fsS -o /dev/null -w '%{size_download}' -H "Accept-Encoding: $ae" \
                    -H 'Content-Type: application/json' -d "$s16" \
                    "http://127.0.0.1:$port/v1/models/$m/sample")" >>"$work/wire"
            done
        fi
    done
done

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# memory after serving, before the training job loads its data set
l_rss=$(rss_kb "$lpid")
l_hwm=$(hwm_kb "$lpid")
t_rss=0
if [ "$TORCH" = 1 ]; then
    for p in $tpid $(pgrep -P "$tpid" || true); do t_rss=$((t_rss + $(rss_kb "$p"))); done
fi

# --- decode with wrk on a CPU of its own ------------------------------------------
# Above, wrk and the kernel's loopback work for it run on the daemon's CPUs,
# so a fixed cost a request that is the client's, not the server's, is in
# every row.  Here the daemon's threads move to every CPU but the last, and
# wrk runs on the last one, as a client on another machine would: decode one
# latent as JSON, as .npy and as /v2 binary at 64 connections.
if [ "$PIN" = 1 ] && [ "$NCPU" -ge 2 ] && command -v taskset >/dev/null; then
    last=$((NCPU - 1))
    cpus=$(taskset -c -p "$lpid" | sed 's/.*: //')
    taskset -a -c -p "0-$((last - 1))" "$lpid" >/dev/null
    echo "bench-serve: decode with wrk on CPU $last, the daemon on CPUs 0-$((last - 1))" >&2
    pin="taskset -c $last"
    for m in $MODELS; do
        WRAP=$pin CONNS=64 measure latentd/pin "$lport" "$m" decode-json "/v1/models/$m/decode" "$(cat "$work/z-$m.json")"
        WRAP=$pin CONNS=64 measure latentd/pin "$lport" "$m" decode-npy "/v1/models/$m/decode" "@$work/z-$m.npy"
        export V2HLEN
        V2HLEN=$(cat "$work/v2hlen-$m")
        WRAP=$pin CONNS=64 measure latentd/pin "$lport" "$m" v2-binary "/v2/models/$m/infer" "@$work/v2-$m.bin"
        unset V2HLEN
    done
    taskset -a -c -p "$cpus" "$lpid" >/dev/null
fi

# --- sample with one training job running ---------------------------------------
# A default-size GAN on 10000 Fashion-MNIST images with far more epochs than
# the measurement lasts; it trains on the daemon's worker thread (SCHED_IDLE,
# pausing between steps while serving is busy: training_yield_load)
# while wrk drives `sample`, and is cancelled afterwards.  The table's note
# says how many steps it made and how long it paused.
job_note="skipped (JOB=0)"
yield_s() { # seconds training has paused for serving, from /metrics
    curl -fsS "http://127.0.0.1:$lport/metrics" | awk '$1 == "latentd_training_yield_seconds_total" {print $2}'
}
job_json() { # GET /v1/jobs/ID -> "state step samples_per_s"
    curl -fsS -H "Authorization: Bearer $admin" "http://127.0.0.1:$lport/v1/jobs/$1" |
        "$PY" -c 'import json,sys; j=json.load(sys.stdin); print(j["state"], j["step"], j["samples_per_s"])'
}
if [ "$JOB" = 1 ]; then
    job_note="not measured: the job did not start (see $work/latentd.log)"
    spec='{"kind":"gan","model":"bench-serve-job","limit":10000,"train":{"epochs":1000}}'
    jid=$(curl -fsS -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
        -d "$spec" "http://127.0.0.1:$lport/v1/jobs" 2>/dev/null |
        "$PY" -c 'import json,sys; print(json.load(sys.stdin)["id"])' 2>/dev/null || true)
    state=none
    n_poll=0
    [ -n "$jid" ] && n_poll=600 # up to 60 s for the data to load
    for ((i = 0; i < n_poll; i++)); do
        read -r state step _ <<<"$(job_json "$jid" 2>/dev/null || echo "none 0 0")"
        [ "$state" = running ] && [ "${step:-0}" -gt 0 ] && break
        [ "$state" = failed ] && break
        sleep 0.1
    done
    if [ "$state" = running ]; then
        read -r _ step0 _ <<<"$(job_json "$jid")"
        y0=$(yield_s)
        t0=$(date +%s.%N)
        echo "bench-serve: training job $jid running (step $step0); sample again" >&2
        for m in $MODELS; do
            measure latentd+job "$lport" "$m" sample-json "/v1/models/$m/sample" '{"n":1,"seed":7}'
            measure latentd+job "$lport" "$m" sample-png "/v1/models/$m/sample" '{"n":1,"seed":7,"format":"png"}'
        done
        read -r state step1 sps <<<"$(job_json "$jid")"
        y1=$(yield_s)
        t1=$(date +%s.%N)
        job_note=$("$PY" -c 'import sys; s0,s1,t0,t1,st,sps,jid,y0,y1=sys.argv[1:10]; w=float(t1)-float(t0); print("GAN job %s, %s during the runs: %d steps of 64 in %.0f s (%.0f samples/s), paused for serving %.0f s of them" % (jid, st, int(s1)-int(s0), w, (int(s1)-int(s0))*64/w, float(y1 or 0)-float(y0 or 0)))' \
            "$step0" "$step1" "$t0" "$t1" "$state" "$sps" "$jid" "$y0" "$y1")
        j_rss=$(rss_kb "$lpid")
        job_note="$job_note; daemon RSS with the job: $((j_rss / 1024)) MiB"
    fi
    if [ -n "$jid" ]; then
        curl -fsS -X DELETE -H "Authorization: Bearer $admin" "http://127.0.0.1:$lport/v1/jobs/$jid" >/dev/null 2>&1 || true
        for ((i = 0; i < 100; i++)); do
            read -r state _ <<<"$(job_json "$jid" 2>/dev/null || echo "none 0 0")"
            [ "$state" = cancelled ] || [ "$state" = failed ] || [ "$state" = none ] && break
            sleep 0.1
        done
    fi
    # idle again, right after: the job's p99 is compared with the mean of the
    # idle p99 before and after it, so a drift of the machine over the
    # minutes between the two phases does not pass for the job's effect
    if [ -n "${step1:-}" ]; then
        echo "bench-serve: job cancelled; sample idle again" >&2
        for m in $MODELS; do
            measure latentd+after "$lport" "$m" sample-json "/v1/models/$m/sample" '{"n":1,"seed":7}'
            measure latentd+after "$lport" "$m" sample-png "/v1/models/$m/sample" '{"n":1,"seed":7,"format":"png"}'
        done
    fi
fi

# --- nginx + 2 replicas --------------------------------------------------------
# Both replicas and nginx share the machine with wrk and the idle lone
# daemon; the row is compared with the lone daemon's at 64 connections.
if [ "$CLUSTER" = 1 ] && ! command -v nginx >/dev/null; then
    echo "bench-serve: nginx is not installed; no cluster row" >&2
    CLUSTER=0
fi
if [ "$CLUSTER" = 1 ]; then
    cport=$(free_port)
    CLUSTER_DIR="$work/cluster" CLUSTER_PORT=$cport CLUSTER_PORTS="$(free_port) $(free_port)" \
        CLUSTER_MODELS="$work/models" LATENTD=$LATENTD LATENTD_ARGS="--config $CONFIG" \
        scripts/run-cluster.sh 2 >"$work/cluster.log" 2>&1 &
    pids+=($!)
    for ((i = 0; i < 300; i++)); do
        grep -q "cluster ready" "$work/cluster.log" && break
        sleep 0.1
    done
    grep -q "cluster ready" "$work/cluster.log" || { cat "$work/cluster.log" >&2; die "the cluster did not start"; }
    echo "bench-serve: nginx + 2 replicas" >&2
    for m in $MODELS; do
        CONNS=64 measure nginx+2 "$cport" "$m" sample-json "/v1/models/$m/sample" '{"n":1,"seed":7}'
        CONNS=64 measure nginx+2 "$cport" "$m" sample-png "/v1/models/$m/sample" '{"n":1,"seed":7,"format":"png"}'
    done
fi

# --- the table ------------------------------------------------------------------
echo
echo "bench-serve: $NCPU CPUs (wrk runs on the same CPUs), ${DURATION}s per point, median of $REPEAT;" \
    "load average before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" - "$results" "$l_rss" "$l_hwm" "$t_rss" "$TORCH_WORKERS" "$job_note" "$work/wire" "$work/passes" <<'EOF'
import os, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
per_pass = {}  # (model, label, conns): requests a decode pass over the point
if os.path.exists(sys.argv[8]):
    for l in open(sys.argv[8]):
        server, m, label, c, b0, r0, b1, r1 = l.split()
        if int(b1) > int(b0):
            per_pass[(server, m, label, int(c))] = (int(r1) - int(r0)) / (int(b1) - int(b0))
def passes_note(model, label, c, server="latentd"):
    p = per_pass.get((server, model, label, c))
    return "" if p is None else ", %.1f requests a decode pass" % p
wire = {}
if os.path.exists(sys.argv[7]):
    for l in open(sys.argv[7]):
        m, ae, n = l.split()
        wire[(m, ae)] = int(n)
l_rss, l_hwm, t_rss, workers = (int(x) for x in sys.argv[2:6])
job_note = sys.argv[6]
data = {}
every = {}
for server, model, label, c, n, rps, p50, p99, non2xx, sockerr, lost, slow, hmax, us, runs in rows:
    data[(server, model, label, int(c))] = (float(rps), float(p50) / 1000, float(p99) / 1000,
                                            int(non2xx), int(sockerr), int(n), float(lost),
                                            float(us))
    every[(server, model, label, int(c))] = [(float(a) / 1000, float(b)) for a, b in
                                             (x.split(":") for x in runs.split(","))]
keys = sorted({k[1:] for k in data if k[0] in ("latentd", "torch")}, key=lambda k: (k[0], k[1], k[2]))
print()
print("%-12s %-12s %4s | %10s %8s %8s %6s %6s | %10s %8s %8s %6s | %7s" % (
    "model", "endpoint", "conn", "latentd r/s", "p50 ms", "p99 ms", "non2xx", "host%",
    "torch r/s", "p50 ms", "p99 ms", "non2xx", "ratio"))
print("-" * 129)
ok = True
for model, label, c in keys:
    l = data.get(("latentd", model, label, c))
    t = data.get(("torch", model, label, c))
    lf = "%10.0f %8.2f %8.2f %6d %6.1f" % (l[0], l[1], l[2], l[3] + l[4], l[6]) if l else " " * 44
    tf = "%10.0f %8.2f %8.2f %6d" % (t[0], t[1], t[2], t[3] + t[4]) if t else " " * 37
    ratio = "%6.1fx" % (l[0] / t[0]) if l and t and t[0] > 0 else "      -"
    print("%-12s %-12s %4d | %s | %s | %s" % (model, label, c, lf, tf, ratio))
    if l and (l[3] + l[4] > 0):
        ok = False
print()
print("host%: the share of the median run's time the CPUs were not the guest's"
      " (build/hostprobe beside wrk; see bench/hostprobe.c)")
print("latentd resident memory after the run: %.1f MiB (peak %.1f MiB); target < 64 MiB"
      % (l_rss / 1024, l_hwm / 1024))
if t_rss:
    print("PyTorch peer resident memory (%d uvicorn workers + parent): %.1f MiB" % (workers, t_rss / 1024))
at64 = [(k, data[("latentd",) + k], data.get(("torch",) + k)) for k in keys if k[2] == 64]
for k, l, t in at64:
    ratio = ("%.1fx the peer's req/s" % (l[0] / t[0]) if t and t[0]
             else "peer not measured")
    print("at 64 connections, %s %s: %s (target >= 10x), p99 %.2f ms (target < 10 ms)"
          % (k[0], k[1], ratio, l[2]))
    runs = every[("latentd",) + k]
    print("    p99 of each run, ms (host lost %%): %s; under 10 ms in %d of %d"
          % (", ".join("%.2f (%.1f)" % x for x in runs), sum(x[0] < 10 for x in runs), len(runs)))
def binary_ratios(server, where):
    """Each binary decode row against decode JSON: req/s, and the daemon's
    CPU time a request (what the server spends, wherever the client runs)."""
    for model in sorted({k[1] for k in data if k[0] == server}):
        j = data.get((server, model, "decode-json", 64))
        for label in ("decode-npy", "v2-binary"):
            b = data.get((server, model, label, 64))
            if j and b and j[0] > 0:
                print("%s, %s %s: %.2fx decode-json's req/s (target >= 1.5x)%s; daemon CPU"
                      " a request %.1f us against %.1f (%.2fx less)"
                      % (where, model, label, b[0] / j[0], passes_note(model, label, 64, server),
                         b[7], j[7], j[7] / b[7] if b[7] > 0 else float("nan")))
        if j:
            print("%s, %s decode-json: %.0f req/s%s"
                  % (where, model, j[0], passes_note(model, "decode-json", 64, server)))
binary_ratios("latentd", "at 64 connections")
for model in sorted({k[0] for k in keys}):
    # the batched point: 16 rows a request, so rows/s is 16x req/s
    j = data.get(("latentd", model, "decode16-json", 64))
    for label in ("decode16-npy", "v2-binary16"):
        b = data.get(("latentd", model, label, 64))
        if j and b and j[0] > 0:
            print("at 64 connections, %s %s: %.2fx decode16-json's req/s (%.0f rows/s against %.0f)"
                  % (model, label, b[0] / j[0], 16 * b[0], 16 * j[0]))
for model in sorted({k[0] for k in keys}):
    p, g = wire.get((model, "identity")), wire.get((model, "gzip"))
    if p and g:
        line = "%s n=16 JSON sample: %d bytes plain, %d gzipped (%.2fx smaller)" % (model, p, g, p / g)
        a = data.get(("latentd", model, "s16-json", 64))
        b = data.get(("latentd", model, "s16-json-gzip", 64))
        if a and b and a[0] > 0:
            line += "; at 64 connections %.0f req/s plain, %.0f gzipped (%.2fx)" % (a[0], b[0], b[0] / a[0])
        print(line)

pkeys = sorted({k[1:] for k in data if k[0] == "latentd/pin"})
if pkeys:
    print()
    print("decode with wrk on a CPU of its own (the last; the daemon on the others), 64 connections")
    print("%-12s %-12s %4s | %10s %8s %8s %6s | %12s" % (
        "model", "endpoint", "conn", "latentd r/s", "p50 ms", "p99 ms", "non2xx", "daemon us/req"))
    print("-" * 80)
    for model, label, c in pkeys:
        l = data[("latentd/pin", model, label, c)]
        print("%-12s %-12s %4d | %10.0f %8.2f %8.2f %6d | %12.1f" % (
            model, label, c, l[0], l[1], l[2], l[3] + l[4], l[7]))
        if l[3] + l[4] > 0:
            ok = False
    binary_ratios("latentd/pin", "wrk on its own CPU")
print("latentd non-2xx or socket errors: %s" % ("none" if ok else "SOME (see table)"))

jkeys = sorted({k[1:] for k in data if k[0] == "latentd+job"})
print()
print("sample with one training job running: %s" % job_note)
if jkeys:
    print("%-12s %-12s %4s | %10s %8s %8s %6s | %8s %8s %8s %8s" % (
        "model", "endpoint", "conn", "latentd r/s", "p50 ms", "p99 ms", "non2xx",
        "idle p99", "after", "mean", "p99/idle"))
    print("-" * 104)
    worst = 0.0
    for model, label, c in jkeys:
        j = data[("latentd+job", model, label, c)]
        b = data.get(("latentd", model, label, c))
        a = data.get(("latentd+after", model, label, c))
        idle = [x[2] for x in (b, a) if x]
        ref = sum(idle) / len(idle) if idle else float("nan")
        r = j[2] / ref if ref > 0 else float("nan")
        worst = max(worst, r) if r == r else worst
        print("%-12s %-12s %4d | %10.0f %8.2f %8.2f %6d | %8s %8s %8.2f %7.1fx" % (
            model, label, c, j[0], j[1], j[2], j[3] + j[4],
            "%.2f" % b[2] if b else "-", "%.2f" % a[2] if a else "-", ref, r))
        if j[3] + j[4] > 0:
            ok = False
    print("worst p99 with the job / mean idle p99 (before and after): %.1fx (target <= 2x)" % worst)

ckeys = sorted({k[1:] for k in data if k[0] == "nginx+2"})
if ckeys:
    print()
    print("nginx + 2 replicas against 1 daemon, same machine (the proxy's cost, not a speed-up)")
    print("%-12s %-12s %4s | %10s %8s %6s | %10s %8s %6s | %7s" % (
        "model", "endpoint", "conn", "1 daemon", "p99 ms", "non2xx", "nginx+2", "p99 ms",
        "non2xx", "ratio"))
    print("-" * 95)
    for model, label, c in ckeys:
        n = data[("nginx+2", model, label, c)]
        l = data.get(("latentd", model, label, c))
        lf = "%10.0f %8.2f %6d" % (l[0], l[2], l[3] + l[4]) if l else " " * 26
        ratio = "%6.2fx" % (n[0] / l[0]) if l and l[0] > 0 else "      -"
        print("%-12s %-12s %4d | %s | %10.0f %8.2f %6d | %s" % (
            model, label, c, lf, n[0], n[2], n[3] + n[4], ratio))
EOF
