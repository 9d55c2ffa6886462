#!/usr/bin/env bash
# make bench: one epoch of each training recipe in latentd and in PyTorch, in
# the same run, on this machine; samples/s, the ratio, and achieved GFLOP/s
# next to a large SGEMM measured in the same run.
#   THREADS   training threads on both sides: latentd --threads (OpenBLAS on
#             one thread in each) and torch.set_num_threads (default: all cores)
#   EPOCHS    epochs per recipe (default 1)
#   LIMIT     images per epoch of the conv rows, both sides (default 6400;
#             a full 60,000-image conv epoch takes many minutes on 2 cores)
#   TORCH     python with torch (default /usr/bin/python3; skipped if it lacks torch)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/latentd
threads=${THREADS:-$(nproc)}
epochs=${EPOCHS:-1}
limit=${LIMIT:-6400}
py=${TORCH:-/usr/bin/python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

have_torch=0
if "$py" -c 'import torch' 2>/dev/null; then have_torch=1; fi

echo "# make bench — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "# threads $threads, epochs $epochs, conv rows on $limit images, load $(cut -d' ' -f1-3 /proc/loadavg)"
$bin bench-gemm --threads "$threads"
printf '%-12s %14s %14s %8s %10s\n' recipe latentd_sps torch_sps ratio GFLOP/s
run() { # name, latentd flags..., -- torch recipe and flags...
    local name=$1; shift
    local args=()
    while [ "$1" != "--" ]; do args+=("$1"); shift; done
    shift
    local line sps gf tsps=NA ratio=NA
    line=$($bin train "${args[@]}" --epochs "$epochs" --threads "$threads" --out "$tmp/$name.safetensors" 2>/dev/null | tail -n 1)
    sps=$(sed -n 's/.*(\([0-9]*\) samples\/s, \([0-9.]*\) GFLOP\/s).*/\1/p' <<<"$line")
    gf=$(sed -n 's/.*(\([0-9]*\) samples\/s, \([0-9.]*\) GFLOP\/s).*/\2/p' <<<"$line")
    if [ $have_torch = 1 ]; then
        tsps=$("$py" bench/train_torch.py "$@" --epochs "$epochs" --threads "$threads" | awk '{print $4}')
        ratio=$(awk -v a="$sps" -v b="$tsps" 'BEGIN{printf "%.2fx", a/b}')
    fi
    printf '%-12s %14s %14s %8s %10s\n' "$name" "$sps" "$tsps" "$ratio" "$gf"
}
run vae --kind vae -- vae
run gan-article --kind gan --arch article -- gan-article
run gan --kind gan --loss ns -- gan
run dcgan --kind gan --arch dcgan --limit "$limit" -- dcgan --limit "$limit"
run conv-vae --kind vae --arch conv --limit "$limit" -- conv-vae --limit "$limit"
[ $have_torch = 1 ] || echo "(python3-torch not installed: PyTorch columns skipped)"
