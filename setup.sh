#!/usr/bin/env bash
# README command (a): install dependencies, build (Release), run the demo job:
# the embedded demo model (demo/) draws a picture from a prompt on the CPU.
set -euo pipefail
cd "$(dirname "$0")"
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
echo
echo "== demo: sdxl generate on the embedded demo model =="
build/sdxl generate --model demo/model --prompt "a red circle on a blue background" \
  --seed 2 --steps 20 --cfg 6 -o build/demo-red-circle.png
echo "(diffusers drew demo/reference/base_red_circle.png with the same settings)"
echo
echo "== demo: the same with a LoRA from the demo's LoRA folders (by name, in the prompt) =="
build/sdxl generate --model demo/model --lora-dir demo/loras \
  --prompt "a red circle on a blue background <lora:outline_style:1.0>" \
  --seed 2 --steps 20 --cfg 6 -o build/demo-red-circle-outline.png
echo "(diffusers: demo/reference/outline_1.0_red_circle.png)"
build/sdxl lora ls --lora-dir demo/loras
echo
echo "== engine smoke: one SDXL UNet stage through the op table =="
build/sdxl make-model --smoke -o build/smoke-model.safetensors
build/sdxl smoke --model build/smoke-model.safetensors
