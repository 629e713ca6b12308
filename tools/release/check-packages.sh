#!/usr/bin/env bash
# Packs every workspace package as `npm publish` would (each `prepack` builds from a clean dist/), then
# checks each tarball: publint (warnings are errors), are-the-types-wrong (packages that ship types),
# and its contents: a README and a LICENSE, and no build leftovers (.tsbuildinfo, source maps, tests).
#
#   tools/release/check-packages.sh [TARBALL...]   needs `npm ci --prefix tools/release`. Without
#   arguments it packs the workspaces first; the prebuilt platform package then needs its kiln.node
#   (the release rehearsal, rehearse.sh, makes it and checks the tarballs it published).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$PWD/tools/release/node_modules/.bin
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
tarballs=("$@")
if [ ${#tarballs[@]} -eq 0 ]; then
  npm pack --workspaces --pack-destination "$out" >"$out/pack.log" 2>&1 || { cat "$out/pack.log"; exit 1; }
  tarballs=("$out"/*.tgz)
fi
status=0
for tarball in "${tarballs[@]}"; do
  name=$(basename "$tarball")
  files=$(tar -tzf "$tarball")
  problems=()
  grep -qx 'package/README.md' <<<"$files" || problems+=("no README.md")
  grep -qx 'package/LICENSE' <<<"$files" || problems+=("no LICENSE")
  leftovers=$(grep -E '\.tsbuildinfo$|\.map$|/test/|\.test\.|jest\.config' <<<"$files" || true)
  [ -z "$leftovers" ] || problems+=("build leftovers: $(tr '\n' ' ' <<<"$leftovers")")
  "$bin/publint" run "$tarball" --strict >"$out/$name.publint.txt" 2>&1 || problems+=("publint: $(tail -n +4 "$out/$name.publint.txt")")
  if tar -xzOf "$tarball" package/package.json | node -e 'const p=JSON.parse(require("fs").readFileSync(0));process.exit(p.types?0:1)'; then
    "$bin/attw" "$tarball" --format ascii >"$out/$name.attw.txt" 2>&1 || problems+=("are-the-types-wrong: $(cat "$out/$name.attw.txt")")
  fi
  if [ ${#problems[@]} -eq 0 ]; then
    echo "ok    $name ($(wc -l <<<"$files") files, $(du -k "$tarball" | cut -f1) KiB)"
  else
    status=1
    echo "FAIL  $name"
    printf '        %s\n' "${problems[@]}"
  fi
done
exit $status
