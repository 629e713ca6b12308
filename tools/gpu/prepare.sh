#!/usr/bin/env bash
# Prepares the git-ignored .gpu/ folder that travels to the GPU machine (carry [".gpu"]), which has no
# Node.js, no npm and no network. Runs here, on the development machine:
#   1. builds the TypeScript (npm run build:ts);
#   2. in a scratch copy of the checkout (the files that travel, plus every dist/ folder), installs the
#      production dependencies only (npm ci --omit=dev from the warm npm cache; else a copy of this
#      node_modules pruned with npm prune --omit=dev), keeping the workspace symlinks;
#   3. packs node_modules (root and per-workspace) and the dist/ folders into .gpu/kiln-gpu.tar.xz;
#   4. copies Node.js itself (../shared/tools/node-v20-linux-x64.xz) into .gpu/.
# The native addon is not packed: tools/gpu/run.sh builds it there, with CUDA. Fails when .gpu/ passes
# 30 MB or everything that travels passes the 64 MiB the tool carries.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
node_xz="$root/../shared/tools/node-v20-linux-x64.xz"
gpu_dir="$root/.gpu"
max_gpu_bytes=$((30 * 1000 * 1000))
max_carry_bytes=$((64 * 1024 * 1024))

[[ -f "$node_xz" ]] || { echo "prepare.sh: $node_xz is missing" >&2; exit 1; }

echo "== building the TypeScript"
npm run build:ts

scratch="$(mktemp -d "${TMPDIR:-/tmp}/kiln-gpu-prepare.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

echo "== scratch copy in $scratch"
# What the GPU tool copies (tracked, and untracked files git does not ignore) that exists right now.
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' file; do
  [[ -e "$file" || -L "$file" ]] && printf '%s\0' "$file"
done | tar --null -T - -cf - | tar -xf - -C "$scratch"
dist_dirs=()
for dir in native/dist packages/*/dist; do
  [[ -d "$dir" ]] || continue
  dist_dirs+=("$dir")
  mkdir -p "$scratch/$(dirname "$dir")"
  cp -a "$dir" "$scratch/$dir"
done
[[ ${#dist_dirs[@]} -gt 0 ]] || { echo "prepare.sh: no dist/ folder after the build" >&2; exit 1; }
[[ -f "$scratch/packages/cli/dist/bin/kiln.js" ]] || { echo "prepare.sh: packages/cli/dist/bin/kiln.js is missing" >&2; exit 1; }

echo "== production dependencies"
if (cd "$scratch" && npm ci --omit=dev --ignore-scripts --offline --no-audit --no-fund >"$scratch/.npm-ci.log" 2>&1); then
  echo "npm ci --omit=dev --offline: ok"
else
  echo "npm ci --offline failed (tail of its log below); pruning a copy of node_modules instead"
  tail -5 "$scratch/.npm-ci.log" || true
  rm -rf "$scratch/node_modules"
  for modules in node_modules native/node_modules packages/*/node_modules; do
    [[ -d "$modules" ]] && cp -a "$modules" "$scratch/$modules"
  done
  (cd "$scratch" && npm prune --omit=dev --ignore-scripts --offline --no-audit --no-fund)
fi
rm -f "$scratch/.npm-ci.log"
# The native build's tools (cmake-js, node-addon-api, node-api-headers) are @kiln/native's optional peers
# and dev dependencies, which --omit=dev leaves out: the GPU machine builds the addon from source, so they
# go in too, at @kiln/native's pinned versions.
build_tools=$(node -p "const d = require('./native/package.json').devDependencies; ['cmake-js', 'node-addon-api', 'node-api-headers'].map((n) => n + '@' + d[n]).join(' ')")
# From the npm cache; a fresh cache filled by `npm ci` holds the tarballs but not always the packuments
# that `npm install` asks for, so then from the registry (this machine reaches it; the GPU machine does not).
if ! (cd "$scratch" && npm install --no-save --omit=dev --ignore-scripts --offline --no-audit --no-fund $build_tools >"$scratch/.npm-tools.log" 2>&1) &&
  ! (cd "$scratch" && npm install --no-save --omit=dev --ignore-scripts --prefer-offline --no-audit --no-fund $build_tools >>"$scratch/.npm-tools.log" 2>&1); then
  tail -5 "$scratch/.npm-tools.log" >&2 || true
  echo "prepare.sh: cannot install the native build's tools ($build_tools) from the npm cache or the registry" >&2
  exit 1
fi
rm -f "$scratch/.npm-tools.log"

# The workspace links must survive: @kiln/* are relative symlinks into the checkout.
for link in "$scratch"/node_modules/@kiln/*; do
  [[ -L "$link" ]] || { echo "prepare.sh: $link is not a workspace symlink" >&2; exit 1; }
done
for pkg in cmake-js node-addon-api node-api-headers; do
  [[ -d "$scratch/node_modules/$pkg" || -d "$scratch/native/node_modules/$pkg" ]] || { echo "prepare.sh: $pkg is missing after the install" >&2; exit 1; }
done
if [[ -d "$scratch/node_modules/jest" ]]; then echo "prepare.sh: dev dependencies are still installed" >&2; exit 1; fi

echo "== packing"
cd "$scratch"
pack=(node_modules)
for modules in native/node_modules packages/*/node_modules; do
  [[ -d "$modules" ]] && pack+=("$modules")
done
pack+=("${dist_dirs[@]}")
mkdir -p "$gpu_dir"
# Identical bytes for identical inputs: sorted names, fixed owner and times.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2026-01-01 00:00:00' \
  --exclude='*.tsbuildinfo' -cf - "${pack[@]}" | xz -9 -T0 >"$gpu_dir/kiln-gpu.tar.xz.tmp"
mv "$gpu_dir/kiln-gpu.tar.xz.tmp" "$gpu_dir/kiln-gpu.tar.xz"
cd "$root"
cp "$node_xz" "$gpu_dir/node-v20-linux-x64.xz"

echo "== sizes"
unpacked=$(du -sb "${pack[@]/#/$scratch/}" | awk '{s += $1} END {print s}')
printf '%-40s %10s bytes (%s unpacked: %s)\n' ".gpu/kiln-gpu.tar.xz" "$(stat -c %s "$gpu_dir/kiln-gpu.tar.xz")" "$unpacked" "${pack[*]}"
printf '%-40s %10s bytes\n' ".gpu/node-v20-linux-x64.xz" "$(stat -c %s "$gpu_dir/node-v20-linux-x64.xz")"
gpu_bytes=$(du -sb "$gpu_dir" | awk '{print $1}')
tree_bytes=$(git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do [[ -f "$f" ]] && printf '%s\0' "$f"; done | du -cb --files0-from=- | tail -1 | awk '{print $1}')
printf '%-40s %10s bytes (limit %s)\n' ".gpu/ in all" "$gpu_bytes" "$max_gpu_bytes"
printf '%-40s %10s bytes\n' "working tree that travels" "$tree_bytes"
printf '%-40s %10s bytes (limit %s)\n' "everything carried" "$((gpu_bytes + tree_bytes))" "$max_carry_bytes"
if ((gpu_bytes > max_gpu_bytes)); then
  echo "prepare.sh: .gpu/ is $gpu_bytes bytes, over $max_gpu_bytes" >&2
  exit 1
fi
if ((gpu_bytes + tree_bytes > max_carry_bytes)); then
  echo "prepare.sh: the working tree and .gpu/ are $((gpu_bytes + tree_bytes)) bytes, over the $max_carry_bytes the tool carries" >&2
  exit 1
fi
echo "== ready: run \`bash tools/gpu/run.sh\` on the GPU machine with carry [\".gpu\"]"
