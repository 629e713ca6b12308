#!/usr/bin/env bash
# Sanitizer run (issue 16): builds the addon with AddressSanitizer + UndefinedBehaviorSanitizer
# (KILN_SANITIZE=address, into native/build-asan; undefined behaviour aborts) and runs the native and
# runtime Jest suites on it, in a Node that preloads the ASan runtime. Fails on any ASan or UBSan report,
# and on any leak whose allocation stack passes through Kiln's code (kiln.node); leaks of Node and V8
# themselves at exit are not Kiln's and are listed only as a count. Reports go to log files and are
# judged there (exitcode=0: a leak report at exit must not change the exit code that tests of child
# processes check).
#
#   tools/sanitize/run.sh [PROJECT...]        default: native runtime
# ThreadSanitizer is tools/sanitize/tsan-executor.sh (a C++ stress driver: Node is not instrumented).
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=address
projects=("$@")
[ ${#projects[@]} -gt 0 ] || projects=(native packages/runtime)
out=build-asan
runtime=$(gcc -print-file-name=libasan.so)
(cd native && npx cmake-js compile --out "$out" --config Release --parallel "${KILN_SANITIZE_JOBS:-2}" \
  --CDKILN_SANITIZE="$mode" --CDKILN_CUDA=off >/dev/null)
binary=$PWD/native/$out/Release/kiln.node
reports=$(mktemp -d)
trap 'rm -rf "$reports"' EXIT

status=0
for project in "${projects[@]}"; do
  echo "== $project under $mode sanitizers"
  # The sanitizer runtime must be loaded first; every process Jest starts inherits it.
  if ! (cd "$project" && env LD_PRELOAD="$runtime" KILN_NATIVE_BINARY="$binary" \
      ASAN_OPTIONS="detect_leaks=1:log_path=$reports/asan:halt_on_error=1:exitcode=0" \
      UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan" \
      npx jest --runInBand --testTimeout=600000); then
    status=1
  fi
done
node tools/sanitize/check-reports.mjs "$reports" || status=1
exit $status
