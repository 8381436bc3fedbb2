#!/usr/bin/env bash
# README command (b): the whole test suite.
#   1. Release build (-Werror) and the suite;
#   2. the suite again under AddressSanitizer + UndefinedBehaviorSanitizer;
#   3. each libFuzzer target for a bounded time (when clang is there).
# Ends with one line "N passed, N failed" summing both suite runs (a fuzz
# crash counts as a failure).
set -uo pipefail
cd "$(dirname "$0")"
scripts/install-deps.sh || exit 1
jobs=$(nproc)
fuzz_seconds=${SDXL_FUZZ_SECONDS:-30}
total_pass=0
total_fail=0

run_suite() { # name build-dir [filter]
  local log="$2/suite-$1.log"
  "$2/tests/sdxl_tests" ${3:+"$3"} 2>&1 | tee "$log"
  local line
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n1)
  if [[ -z "$line" ]]; then
    echo "$1: the suite did not finish (crash?)"
    total_fail=$((total_fail + 1))
    return
  fi
  total_pass=$((total_pass + $(cut -d' ' -f1 <<<"$line")))
  total_fail=$((total_fail + $(cut -d' ' -f3 <<<"$line")))
}

echo "== release build =="
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DSDXL_WERROR=ON >/dev/null &&
  cmake --build build -j"$jobs" || { echo "0 passed, 1 failed"; exit 1; }
echo "== suite (release) =="
run_suite release build

echo "== sanitizer build (ASan + UBSan) =="
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSDXL_SANITIZE=ON -DSDXL_CUDA=OFF \
  -DSDXL_BUILD_BENCH=OFF -DSDXL_WERROR=ON >/dev/null &&
  cmake --build build-asan -j"$jobs" || { echo "$total_pass passed, $((total_fail + 1)) failed"; exit 1; }
echo "== suite (ASan + UBSan) =="
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 run_suite asan build-asan

# ThreadSanitizer over the tests that run threads against each other (the
# LoRA registry and cache under concurrent requests, the thread pool, the
# tokenizer): the whole suite under TSan would take too long for CI.
echo "== ThreadSanitizer build =="
if cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSDXL_TSAN=ON -DSDXL_CUDA=OFF \
     -DSDXL_BUILD_BENCH=OFF -DSDXL_WERROR=ON >/dev/null &&
   cmake --build build-tsan -j"$jobs" --target sdxl_tests >/dev/null; then
  for filter in concurrent thread; do
    echo "== suite (TSan, tests matching '$filter') =="
    TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 run_suite "tsan-$filter" build-tsan "$filter"
  done
else
  echo "TSan build failed"; total_fail=$((total_fail + 1))
fi

if command -v clang >/dev/null && [[ "$fuzz_seconds" != 0 ]]; then
  echo "== fuzz (${fuzz_seconds}s per target) =="
  if CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSDXL_BUILD_FUZZ=ON \
       -DSDXL_CUDA=OFF -DSDXL_BUILD_TESTS=OFF -DSDXL_BUILD_BENCH=OFF >/dev/null &&
     cmake --build build-fuzz -j"$jobs" >/dev/null; then
    for f in fuzz/*.c; do
      name=$(basename "$f" .c)
      corpus=build-fuzz/corpus-$name
      mkdir -p "$corpus"
      [[ -d fuzz/corpus/$name ]] && cp -r "fuzz/corpus/$name/." "$corpus/"
      if build-fuzz/"$name" -max_total_time="$fuzz_seconds" -max_len=65536 -print_final_stats=0 \
           "$corpus" >build-fuzz/"$name".log 2>&1; then
        echo "fuzz $name: ok ($(grep -c . "$corpus"/* 2>/dev/null | wc -l) corpus files)"
        total_pass=$((total_pass + 1))
      else
        echo "fuzz $name: FAILED"; tail -n 40 build-fuzz/"$name".log
        total_fail=$((total_fail + 1))
      fi
    done
  else
    echo "fuzz build failed"; total_fail=$((total_fail + 1))
  fi
fi

echo "$total_pass passed, $total_fail failed"
[[ $total_fail -eq 0 ]]
