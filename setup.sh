#!/usr/bin/env bash
# README command (a): install dependencies, build (Release), run the demo job.
set -euo pipefail
cd "$(dirname "$0")"
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
echo
echo "== demo: sdxl smoke on a small model the project makes =="
build/sdxl make-model --smoke -o build/smoke-model.safetensors
build/sdxl smoke --model build/smoke-model.safetensors
