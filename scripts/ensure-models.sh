#!/usr/bin/env bash
# make run: make sure the daemon's model folder has something to serve.
# If the folder named by models_dir in the config (default config/latentd.conf)
# holds no *.safetensors, copy in the shipped default models from models/
# (fashion-vae, fashion-gan, fashion-cgan); if those are missing too, retrain them.
set -euo pipefail
cd "$(dirname "$0")/.."
conf=${1:-config/latentd.conf}
dir=$(sed -n 's/^[[:space:]]*models_dir[[:space:]]*=[[:space:]]*"\{0,1\}\([^"#]*\)"\{0,1\}.*/\1/p' "$conf" | tail -n 1 | sed 's/[[:space:]]*$//')
dir=${dir:-models}
mkdir -p "$dir"
if ! ls models/fashion-vae.safetensors models/fashion-gan.safetensors models/fashion-cgan.safetensors >/dev/null 2>&1; then
    echo "ensure-models: shipped models missing; training them (several minutes)"
    scripts/make-models.sh
fi
if ! ls "$dir"/*.safetensors >/dev/null 2>&1; then
    echo "ensure-models: $dir is empty; installing the default models"
    cp models/fashion-vae.safetensors models/fashion-gan.safetensors models/fashion-cgan.safetensors "$dir"/
fi
