#!/usr/bin/env bash
# Builds Kiln's native addon with CUDA and runs the CUDA suite (test/cuda) on the GPU machine, which
# has no Node.js, no npm and no network: everything comes from .gpu/, made by tools/gpu/prepare.sh on
# the development machine and carried along (carry [".gpu"]). Run from the repository root:
#
#   bash tools/gpu/run.sh [--bench] [--no-build] [--no-tests] [--tests fixtures,ops,executor,errors]
#
#   --bench      also run tools/bench/gpu-baseline.mjs when it exists (its log goes to setup.log)
#   --sanitize   also run compute-sanitizer (memcheck, racecheck) over tools/gpu/sanitize.mjs
#   --no-build   reuse native/build/Release/kiln.node from an earlier call on the same (warm) machine
#   --no-tests   build only
#   --tests L    only these test files of test/cuda (comma-separated names without .test.mjs)
#
# Results go to $OUT (the folder the GPU tool brings back; ./gpu-out when unset): setup.log (node,
# nvidia-smi, the native build), test-cuda.log (node --test, spec reporter), and what the tests and the
# benchmark write to $KILN_RESULTS_DIR (default $OUT): accuracy-cuda.md/.json, bench files.
# Environment: KILN_CUDA (default on) and KILN_CMAKE_ARGS (extra cmake-js arguments, e.g.
# "--CDCMAKE_CUDA_ARCHITECTURES=90") for the build; KILN_CUDA_SUITE_TARGET=cpu runs the suite on cpu
# engines (a dry run of the suite itself); KILN_SUITE_JOBS, KILN_SUITE_FIXTURES as in test/cuda/helpers.mjs.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

bench=0
sanitize=0
build=1
tests=1
only=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bench) bench=1 ;;
    --sanitize) sanitize=1 ;;
    --no-build) build=0 ;;
    --no-tests) tests=0 ;;
    --tests) only="${2:?--tests needs a list}"; shift ;;
    *) echo "run.sh: unknown argument $1 (expected --bench, --no-build, --no-tests, --tests LIST)" >&2; exit 2 ;;
  esac
  shift
done

OUT="${OUT:-$root/gpu-out}"
mkdir -p "$OUT"
export OUT
export KILN_RESULTS_DIR="${KILN_RESULTS_DIR:-$OUT}"
mkdir -p "$KILN_RESULTS_DIR"
setup_log="$OUT/setup.log"
: >"$setup_log"
say() { echo "== $*" | tee -a "$setup_log"; }
fail() { echo "run.sh: $*" | tee -a "$setup_log" >&2; exit 1; }

[[ -f .gpu/node-v20-linux-x64.xz && -f .gpu/kiln-gpu.tar.xz ]] ||
  fail ".gpu/ lacks node-v20-linux-x64.xz or kiln-gpu.tar.xz: run tools/gpu/prepare.sh on the development machine and carry [\".gpu\"]"

say "machine"
{
  date -u
  uname -a
  if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "nvidia-smi: not found"; fi
} 2>&1 | tee -a "$setup_log"

say "node"
node_home="${HOME:-/tmp}/node"
mkdir -p "$node_home/bin"
xz -d <.gpu/node-v20-linux-x64.xz >"$node_home/bin/node.tmp" || fail "cannot unpack node"
chmod +x "$node_home/bin/node.tmp"
mv "$node_home/bin/node.tmp" "$node_home/bin/node"
export PATH="$node_home/bin:$PATH"
node --version 2>&1 | tee -a "$setup_log"

say "unpacking node_modules and dist/ folders"
tar -xJf .gpu/kiln-gpu.tar.xz || fail "cannot unpack .gpu/kiln-gpu.tar.xz"
[[ -f packages/cli/dist/bin/kiln.js ]] || fail "packages/cli/dist/bin/kiln.js is missing after unpacking"

if ((build)); then
  cmake_js=""
  for candidate in native/node_modules/cmake-js/bin/cmake-js node_modules/cmake-js/bin/cmake-js; do
    [[ -f "$candidate" ]] && { cmake_js="$root/$candidate"; break; }
  done
  [[ -n "$cmake_js" ]] || fail "cmake-js is not in native/node_modules or node_modules"
  say "native build (KILN_CUDA=${KILN_CUDA:-on})"
  if ! command -v nvcc >/dev/null && [[ -d /usr/local/cuda/bin ]]; then export PATH="$PATH:/usr/local/cuda/bin"; fi
  # shellcheck disable=SC2086 # KILN_CMAKE_ARGS is a list of arguments
  (cd native && node "$cmake_js" compile --out build --config Release --parallel "$(nproc)" \
    "--CDKILN_CUDA=${KILN_CUDA:-on}" ${KILN_CMAKE_ARGS:-}) 2>&1 | tee -a "$setup_log"
  [[ ${PIPESTATUS[0]} -eq 0 ]] || fail "the native build failed (see setup.log)"
fi
[[ -f native/build/Release/kiln.node ]] || fail "native/build/Release/kiln.node is missing"
node -e "const n = require('@kiln/native').loadNative(); console.log('cudaInfo:', JSON.stringify(n.cudaInfo ? n.cudaInfo() : 'absent'))" 2>&1 | tee -a "$setup_log"

status=0
if ((tests)); then
  files=(test/cuda/)
  if [[ -n "$only" ]]; then
    files=()
    IFS=',' read -ra names <<<"$only"
    for name in "${names[@]}"; do
      [[ -f "test/cuda/$name.test.mjs" ]] || fail "test/cuda/$name.test.mjs does not exist"
      files+=("test/cuda/$name.test.mjs")
    done
  fi
  say "node --test ${files[*]} (target ${KILN_CUDA_SUITE_TARGET:-cuda}; results in $KILN_RESULTS_DIR)"
  node --test --test-reporter=spec "${files[@]}" 2>&1 | tee "$OUT/test-cuda.log"
  status=${PIPESTATUS[0]}
  echo "== test/cuda exited $status" | tee -a "$OUT/test-cuda.log"
fi

if ((sanitize)); then
  sanitizer="$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)"
  work="$(mktemp -d)"
  say "compute-sanitizer over tools/gpu/sanitize.mjs (one generation, then 16 requests)"
  node tools/gpu/sanitize.mjs prepare "$work" 2>&1 | tee -a "$setup_log"
  : >"$OUT/sanitizer.log"
  for tool in memcheck racecheck; do
    echo "== compute-sanitizer --tool $tool" | tee -a "$OUT/sanitizer.log"
    "$sanitizer" --tool "$tool" --error-exitcode 3 node tools/gpu/sanitize.mjs run "$work" 2>&1 | tee -a "$OUT/sanitizer.log"
    sanitizer_status=${PIPESTATUS[0]}
    echo "== compute-sanitizer --tool $tool exited $sanitizer_status" | tee -a "$OUT/sanitizer.log"
    ((status == 0)) && status=$sanitizer_status
  done
fi

if ((bench)); then
  if [[ -f tools/bench/gpu-baseline.mjs ]]; then
    say "node tools/bench/gpu-baseline.mjs"
    node tools/bench/gpu-baseline.mjs 2>&1 | tee -a "$setup_log"
    bench_status=${PIPESTATUS[0]}
    echo "== gpu-baseline exited $bench_status"
    ((status == 0)) && status=$bench_status
  fi
fi

exit "$status"
