#!/usr/bin/env bash
# make bench: one epoch of each training recipe in latentd and in PyTorch, in
# the same run, on this machine; samples/s, the ratio, and achieved GFLOP/s
# next to a large SGEMM measured in the same run.
#   THREADS   training threads on both sides: latentd --threads (OpenBLAS on
#             one thread in each) and torch.set_num_threads (default: all cores)
#   EPOCHS    epochs per recipe (default 1), except the MLP VAE's
#   VAE_EPOCHS  epochs of the MLP VAE row (default 6): its epoch lasts about a
#             second, so both sides train this many and time all but the
#             first (warm-up: page faults, caches, lazy set-up) alike
#   LIMIT     images per epoch of the conv rows, both sides (default 6400;
#             a full 60,000-image conv epoch takes many minutes on 2 cores)
#   TORCH     python with torch (default /usr/bin/python3; skipped if it lacks torch)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/latentd
threads=${THREADS:-$(nproc)}
epochs=${EPOCHS:-1}
vae_epochs=${VAE_EPOCHS:-6}
limit=${LIMIT:-6400}
py=${TORCH:-/usr/bin/python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

have_torch=0
if "$py" -c 'import torch' 2>/dev/null; then have_torch=1; fi

echo "# make bench — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "# threads $threads, epochs $epochs (vae: $vae_epochs, the first untimed), conv rows on $limit images, load $(cut -d' ' -f1-3 /proc/loadavg)"
$bin bench-gemm --threads "$threads"
printf '%-12s %14s %14s %8s %10s\n' recipe latentd_sps torch_sps ratio GFLOP/s
# samples/s over the epochs after the first, from --progress-lines' JSON (one
# line a step; elapsed_s and samples_per_s count from the start of training)
after_warmup() {
    awk -F'[,:]' '/"epoch_done":1/ {
        for (i = 1; i < NF; i++) {
            if ($i == "\"elapsed_s\"") e = $(i + 1)
            if ($i == "\"samples_per_s\"") s = $(i + 1)
        }
        if (++k == 1) { e0 = e; n0 = s * e }
        e1 = e; n1 = s * e
    } END { if (k > 1 && e1 > e0) printf "%.0f", (n1 - n0) / (e1 - e0) }'
}
run() { # name, epochs, warm-up epochs (0 or 1), latentd flags..., -- torch recipe and flags...
    local name=$1 ep=$2 wu=$3; shift 3
    local args=()
    while [ "$1" != "--" ]; do args+=("$1"); shift; done
    shift
    local line sps gf tsps=NA ratio=NA warm=() flops
    if [ "$wu" = 1 ] && [ "$ep" -gt 1 ]; then
        # timed after the first epoch on both sides
        warm=(--warmup 1)
        $bin train "${args[@]}" --epochs "$ep" --threads "$threads" --progress-lines \
            --out "$tmp/$name.safetensors" >"$tmp/$name.lines" 2>/dev/null
        line=$(grep -v '^{' "$tmp/$name.lines" | tail -n 1)
        flops=$(sed -n 's/.*(\([0-9]*\) samples\/s, \([0-9.]*\) GFLOP\/s).*/\2 \1/p' <<<"$line" |
                awk '{print $1 / $2}') # GFLOP a sample
        sps=$(after_warmup <"$tmp/$name.lines")
        gf=$(awk -v s="$sps" -v f="$flops" 'BEGIN{printf "%.1f", s * f}')
    else
        line=$($bin train "${args[@]}" --epochs "$ep" --threads "$threads" --out "$tmp/$name.safetensors" 2>/dev/null | tail -n 1)
        sps=$(sed -n 's/.*(\([0-9]*\) samples\/s, \([0-9.]*\) GFLOP\/s).*/\1/p' <<<"$line")
        gf=$(sed -n 's/.*(\([0-9]*\) samples\/s, \([0-9.]*\) GFLOP\/s).*/\2/p' <<<"$line")
    fi
    if [ $have_torch = 1 ]; then
        tsps=$("$py" bench/train_torch.py "$@" --epochs "$ep" "${warm[@]}" --threads "$threads" | awk '{print $4}')
        ratio=$(awk -v a="$sps" -v b="$tsps" 'BEGIN{printf "%.2fx", a/b}')
    fi
    printf '%-12s %14s %14s %8s %10s\n' "$name" "$sps" "$tsps" "$ratio" "$gf"
}
run vae "$vae_epochs" 1 --kind vae -- vae
run gan-article "$epochs" 0 --kind gan --arch article -- gan-article
run gan "$epochs" 0 --kind gan --loss ns -- gan
run dcgan "$epochs" 0 --kind gan --arch dcgan --limit "$limit" -- dcgan --limit "$limit"
run conv-vae "$epochs" 0 --kind vae --arch conv --limit "$limit" -- conv-vae --limit "$limit"
[ $have_torch = 1 ] || echo "(python3-torch not installed: PyTorch columns skipped)"
