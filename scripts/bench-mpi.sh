#!/usr/bin/env bash
# make bench-mpi: data-parallel training over MPI ranks on this machine
# (docs/scaling.md): samples/s with 1 and 2 ranks of one thread each, and the
# share of the run spent in collectives (the gradient sums, broadcasts, loss
# sums and stop flags, waiting for the slower rank included), for the default
# VAE and GAN recipes.  Needs build/latentd-mpi (make mpi) and mpirun.
#   LIMIT   examples per epoch (default 12800)
#   RANKS   rank counts to try (default "1 2")
# Open MPI's run-as-root switches are set for these commands only (CI is root).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/latentd-mpi
limit=${LIMIT:-12800}
ranks=${RANKS:-1 2}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader \
       OMPI_MCA_mpi_yield_when_idle=1

echo "# make bench-mpi — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %6s %12s %14s %12s %14s\n' recipe ranks samples/s params grad_MB/step collectives
for kind in vae gan; do
    for k in $ranks; do
        out=$(mpirun -np "$k" --oversubscribe --bind-to none $bin train --kind $kind --limit "$limit" \
              --epochs 1 --threads 1 --out "$tmp/$kind.safetensors" 2>/dev/null)
        sps=$(sed -n 's/.*(\([0-9]*\) samples\/s.*/\1/p' <<<"$out")
        share=$(sed -n 's/.*in them (\([0-9.]*%\)).*/\1/p' <<<"$out")
        params=$($bin info "$tmp/$kind.safetensors" | sed -n 's/^parameters: *//p')
        mb=$(awk -v p="$params" 'BEGIN{printf "%.2f", p*4/1e6}')
        printf '%-6s %6s %12s %14s %12s %14s\n' $kind "$k" "$sps" "$params" "$mb" "${share:-0%}"
    done
done
