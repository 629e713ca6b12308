#!/usr/bin/env bash
# ThreadSanitizer on the executor's threads (issue 16; local, not in CI): builds the library with
# KILN_SANITIZE=thread (native/build-tsan), an engine from the tiny llama fixture, and
# native/stress/executor_stress.cpp, which drives the executor thread and its kernel thread pool from
# four client threads (enqueue, cancel, pause/resume, stats) and ends with a cancelling shutdown. Fails
# on any ThreadSanitizer report, a lost request or a KV block not returned.
# (The Jest suites are not run under TSan: Node and V8 are not instrumented, so TSan reports races
# inside V8's own platform threads that are not Kiln's.)
#
#   tools/sanitize/tsan-executor.sh [requests per client thread, default 100]
set -euo pipefail
cd "$(dirname "$0")/../.."
(cd native && npx cmake-js compile --out build-tsan --config Release --parallel "${KILN_SANITIZE_JOBS:-2}" \
  --CDKILN_SANITIZE=thread --CDKILN_CUDA=off >/dev/null)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
node -e "
const { convertCheckpoint } = require('./packages/convert');
const { buildEngine } = require('./packages/builder');
(async () => {
  await convertCheckpoint({ modelDir: 'fixtures/hf-tiny/llama', outputDir: '$work/checkpoint' });
  await buildEngine({ checkpointDir: '$work/checkpoint', outputDir: '$work/engine', config: { maxBatchSize: 8, maxSeqLen: 64, maxNumTokens: 64 } });
})().catch((e) => { console.error(e); process.exit(1); });"
g++ -std=c++17 -O1 -g -fsanitize=thread -fno-omit-frame-pointer -Inative/src native/stress/executor_stress.cpp \
  native/build-tsan/libkiln.a -lpthread -o "$work/executor_stress"
status=0
TSAN_OPTIONS="halt_on_error=0:second_deadlock_stack=1:log_path=$work/tsan" "$work/executor_stress" "$work/engine/rank0.engine" "${1:-100}" || status=1
if ls "$work"/tsan.* >/dev/null 2>&1; then
  cat "$work"/tsan.*
  echo "ThreadSanitizer: $(grep -c 'WARNING: ThreadSanitizer' "$work"/tsan.*) report(s)"
  status=1
else
  echo "ThreadSanitizer: no reports"
fi
exit $status
