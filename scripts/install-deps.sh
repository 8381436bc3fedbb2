#!/usr/bin/env bash
# Installs what sdxl-worker needs to build and test on Debian 12 (as root).
# Idempotent: does nothing when everything is already there.
set -euo pipefail
pkgs=(build-essential cmake pkg-config libopenblas-dev libcjson-dev libutf8proc-dev zlib1g-dev libpng-dev libjpeg62-turbo-dev libzip-dev libmicrohttpd-dev clang libclang-rt-14-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
