#!/usr/bin/env bash
# The binary of the prebuilt platform package, @kiln/native-linux-x64-gnu: kiln.node built on this
# machine without the CUDA backend and without MPI (so that it needs neither library where it is
# installed) and without the test-only bindings, into native/build-prebuilt, then copied into
# packages/native-linux-x64-gnu/ for packing.
# (The release rehearsal builds it from the packed @kiln/native instead, as a consumer would.)
set -euo pipefail
cd "$(dirname "$0")/../../native"
KILN_MPI=off KILN_CUDA=off KILN_TESTING=off npx cmake-js compile --out build-prebuilt --config Release --parallel "${KILN_BUILD_JOBS:-2}"
cp build-prebuilt/Release/kiln.node ../packages/native-linux-x64-gnu/kiln.node
echo "packages/native-linux-x64-gnu/kiln.node: $(du -h ../packages/native-linux-x64-gnu/kiln.node | cut -f1)"
