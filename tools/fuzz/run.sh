#!/usr/bin/env bash
# Fuzzing (issue 16): builds the libFuzzer targets of native/fuzz with clang (ASan + UBSan) into
# native/build-fuzz, seeds their corpora from the fixtures (tools/fuzz/seeds.mjs, after `npm run
# build`), and runs each target for SECONDS (default 60; CI's smoke run). A crash, leak, timeout or
# sanitizer report fails the run; its input is in native/build-fuzz/artifacts/ (add it to a regression
# test). Longer runs: `tools/fuzz/run.sh 600 fuzz_engine`. Each run prints its exec count.
#
#   tools/fuzz/run.sh [SECONDS] [TARGET...]      TARGET: fuzz_json fuzz_safetensors fuzz_engine fuzz_gguf
#
# Corpora grow in native/build-fuzz/corpus/<target> across runs (ignored by git).
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_json fuzz_safetensors fuzz_engine fuzz_gguf)
build=native/build-fuzz
command -v clang++ >/dev/null || { echo "tools/fuzz/run.sh: clang++ is missing (Debian: apt-get install -y clang)" >&2; exit 1; }

if [ ! -f "$build/build.ninja" ] && [ ! -f "$build/Makefile" ]; then
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  CC=clang CXX=clang++ cmake -S native -B "$build" "${generator[@]}" -DKILN_FUZZ=ON -DKILN_CUDA=off -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$build" --target "${targets[@]}" --parallel "${KILN_FUZZ_JOBS:-2}" >/dev/null

seeds=$build/seeds
[ -d "$seeds/engine" ] && [ -d "$seeds/gguf" ] || node tools/fuzz/seeds.mjs "$seeds" >/dev/null
mkdir -p "$build/artifacts"
status=0
for target in "${targets[@]}"; do
  case $target in
    fuzz_json) seed=$seeds/json; max_len=65536 ;;
    fuzz_safetensors) seed=$seeds/safetensors; max_len=65536 ;;
    fuzz_engine) seed=$seeds/engine; max_len=131072 ;;
    fuzz_gguf) seed=$seeds/gguf; max_len=65536 ;;
    *) echo "unknown target $target" >&2; exit 2 ;;
  esac
  corpus=$build/corpus/$target
  mkdir -p "$corpus"
  log=$build/$target.log
  # ASan/UBSan report and abort on the first error; leaks are checked at the end of each input.
  if ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1} \
     UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
     "$build/$target" "$corpus" "$seed" -max_total_time="$seconds" -max_len=$max_len -timeout=10 \
       -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$build/artifacts/$target-" >"$log" 2>&1; then
    result=ok
  else
    result=FAILED
    status=1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  echo "$target: ${execs:-?} execs in ${seconds} s: $result"
  [ "$result" = ok ] || tail -40 "$log"
done
exit $status
