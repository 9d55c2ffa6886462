#!/usr/bin/env bash
# Retrain the shipped default models from scratch (deterministic: same seed,
# same data, same BLAS thread count => same bytes) and evaluate them.
#   models/fashion-vae.safetensors         default VAE, 10 epochs, batch 128, lr 1e-3, seed 1
#   models/fashion-gan.safetensors         default GAN recipe (wgan-gp), 20 epochs, seed 1
#   models/fashion-classifier.safetensors  the evaluation classifier (served, and used by eval)
#   models/fashion-cgan.safetensors        default CGAN recipe (conditional: sample --label), 20 epochs
# OUT=dir overrides the folder; THREADS=n the OpenBLAS threads.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/latentd
out=${OUT:-models}
threads=${THREADS:-2}
mkdir -p "$out"
$bin train --kind classifier --epochs 10 --seed 1 --threads "$threads" --out "$out/fashion-classifier.safetensors"
$bin train --kind vae --epochs 10 --batch 128 --lr 1e-3 --seed 1 --threads "$threads" --out "$out/fashion-vae.safetensors"
$bin train --kind gan --epochs 20 --seed 1 --threads "$threads" --out "$out/fashion-gan.safetensors"
$bin train --kind cgan --epochs 20 --seed 1 --threads "$threads" --out "$out/fashion-cgan.safetensors"
$bin eval --model "$out/fashion-classifier.safetensors"
$bin eval --model "$out/fashion-vae.safetensors"
$bin eval --model "$out/fashion-gan.safetensors" --classifier "$out/fashion-classifier.safetensors"
$bin eval --model "$out/fashion-cgan.safetensors" --classifier "$out/fashion-classifier.safetensors"
