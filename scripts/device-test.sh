#!/usr/bin/env bash
# Build with CUDA and run the whole suite on a GPU machine that has no
# Debian -dev packages (the workplace's device machine): the build's
# libraries travel as extracted .debs in .deps/root (see below) and are
# found through pkg-config with their prefix rewritten.
#   here:   mkdir -p .deps/debs && (cd .deps/debs && apt-get download libcjson-dev libcjson1 \
#             libutf8proc-dev libutf8proc2 zlib1g-dev zlib1g libpng-dev libpng16-16 libzip-dev libzip4 \
#             libmicrohttpd-dev libmicrohttpd12 libjpeg62-turbo-dev libjpeg62-turbo \
#             pkgconf-bin pkgconf libpkgconf3) && \
#           for f in .deps/debs/*.deb; do dpkg -x "$f" .deps/root; done
#   there:  scripts/device-test.sh      (carry .deps)
set -uo pipefail
R=$PWD/.deps/root
OUTDIR=${OUT:-/tmp}
for f in "$R"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc; do
  sed -i "s|\([= ]\)/usr|\1$R/usr|g; s|-I/usr|-I$R/usr|g" "$f"
done
export LD_LIBRARY_PATH=$R/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
export PKG_CONFIG_PATH=$R/usr/lib/x86_64-linux-gnu/pkgconfig
PKGC=$(command -v pkg-config || echo "$R/usr/bin/pkgconf")
nvidia-smi -L
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DSDXL_BUILD_BENCH=OFF -DPKG_CONFIG_EXECUTABLE="$PKGC" \
  >"$OUTDIR/cfg.log" 2>&1 || { grep -A3 Error "$OUTDIR/cfg.log" | head -30; exit 1; }
cmake --build build-gpu -j"$(nproc)" >"$OUTDIR/build.log" 2>&1 || { grep error "$OUTDIR/build.log" | head -30; exit 1; }
build-gpu/tests/sdxl_tests >"$OUTDIR/tests.log" 2>&1
grep -E '^FAIL|cuda|passed' "$OUTDIR/tests.log"
