#!/usr/bin/env bash
# Release rehearsal (issue 17): the release as users meet it, on a loopback registry (verdaccio; @kiln/*
# live only there, everything else is proxied from the npm registry).
#   1. `npm run version-packages` (changeset version, then package-lock.json brought in step: checked).
#   2. @kiln/native is published alone, then built from its packed sources in an empty project, as a
#      consumer without a prebuilt binary would (`npx kiln-build-native`, KILN_MPI=off KILN_CUDA=off):
#      that build is the prebuilt @kiln/native-linux-x64-gnu, and `changeset publish` publishes the rest.
#   3. Every published tarball is checked (check-packages.sh: publint, are-the-types-wrong, contents).
#   4. In empty projects, each with a fresh npm cache and no compiler on PATH: `@kiln/cli` alone runs
#      `kiln generate`; `@kiln/runtime` + `@kiln/scribe-7m` generate through the API; the same with
#      --omit=optional fails with the message that says what to do; no engine warnings on this Node;
#      install times and sizes recorded.
#   5. The source-build project installs @kiln/runtime + @kiln/scribe-7m with --omit=optional and
#      generates on its own build.
#   6. Plugin compatibility: @kiln/models gets a patch release, @kiln/model-example is built against it,
#      and installed beside the already-published @kiln/cli it registers its architecture and runs.
#
#   tools/release/rehearse.sh            on a clean tree (a fresh clone after `npm ci`): it bumps versions
#                                        and puts them back at the end. KILN_REHEARSAL_DIR keeps the work
#                                        folder (report.md: times and sizes); KILN_REHEARSAL_PORT (4873).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
# The paths it changes (versions, changelogs) and puts back at the end must hold no changes of yours.
touched=(.changeset native packages examples package-lock.json)
if [ -n "$(git status --porcelain --untracked-files=no -- "${touched[@]}")" ]; then
  echo "rehearse.sh bumps versions and puts them back: commit or drop your changes under ${touched[*]} first" >&2
  exit 1
fi
work=${KILN_REHEARSAL_DIR:-$(mktemp -d)}
mkdir -p "$work"
work=$(cd "$work" && pwd)
port=${KILN_REHEARSAL_PORT:-4873}
registry=http://127.0.0.1:$port/
report=$work/report.md
verdaccio_pid=
cleanup() {
  [ -z "$verdaccio_pid" ] || kill "$verdaccio_pid" 2>/dev/null || true
  # Put back what `changeset version` and the patch release changed, and the changelogs they wrote.
  git -C "$repo" checkout -q -- "${touched[@]}"
  git -C "$repo" ls-files --others --exclude-standard -- 'native/CHANGELOG.md' 'packages/*/CHANGELOG.md' 'examples/CHANGELOG.md' |
    (cd "$repo" && xargs -r rm -f)
}
trap cleanup EXIT
step() { echo "== rehearsal: $*"; }
fail() {
  echo "rehearsal FAILED: $*" >&2
  exit 1
}
seconds() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(seconds)" 'BEGIN { printf "%.1f", b - a }'; }

[ -x tools/release/node_modules/.bin/verdaccio ] || npm ci --prefix tools/release --no-audit --no-fund

step "registry on $registry ($work)"
cp tools/release/verdaccio.yaml "$work/verdaccio.yaml"
tools/release/node_modules/.bin/verdaccio --config "$work/verdaccio.yaml" --listen "127.0.0.1:$port" \
  >"$work/verdaccio.out" 2>&1 &
verdaccio_pid=$!
for _ in $(seq 60); do curl -sf "$registry-/ping" >/dev/null && break || sleep 1; done
curl -sf "$registry-/ping" >/dev/null || fail "verdaccio did not start ($work/verdaccio.out)"
token=$(curl -sf -X PUT -H 'content-type: application/json' -d '{"name":"rehearsal","password":"rehearsal"}' \
  "${registry}-/user/org.couchdb.user:rehearsal" | node -pe 'JSON.parse(require("fs").readFileSync(0, "utf8")).token')
# Publishing goes to the loopback registry only; user installs get their own .npmrc below.
publish_rc=$work/publish.npmrc
printf 'registry=%s\n//127.0.0.1:%s/:_authToken=%s\n' "$registry" "$port" "$token" >"$publish_rc"

step "changeset version (npm run version-packages: versions, changelogs, package-lock.json)"
npm run version-packages >"$work/version.log" 2>&1 || { cat "$work/version.log"; fail "npm run version-packages"; }
node -e '
  const lock = require("./package-lock.json");
  const stale = Object.entries(lock.packages).filter(([dir, entry]) => dir && !dir.includes("node_modules"))
    .map(([dir, entry]) => [dir, entry.version, require(`./${dir}/package.json`).version])
    .filter(([, locked, actual]) => locked !== actual);
  if (stale.length) { console.error("package-lock.json is behind:", stale); process.exit(1); }'
version() { node -p "require('./$1/package.json').version"; }
echo "versions: native $(version native), models $(version packages/models), cli $(version packages/cli), runtime $(version packages/runtime)"

step "publish @kiln/native, then build it from its packed sources (the source-build fallback)"
(cd native && NPM_CONFIG_USERCONFIG=$publish_rc npm publish --registry "$registry" >"$work/publish-native.log" 2>&1) ||
  fail "npm publish @kiln/native ($work/publish-native.log)"
source_project=$work/source-build
mkdir -p "$source_project" && cd "$source_project"
printf '{ "private": true }\n' >package.json
printf 'registry=%s\n' "$registry" >.npmrc
npm install --cache "$work/cache-source" --no-audit --no-fund @kiln/native cmake-js@8.0.0 node-addon-api@8.9.2 >/dev/null
[ ! -e node_modules/@kiln/native-linux-x64-gnu ] || fail "the prebuilt package is not published yet, yet it was installed"
start=$(seconds)
KILN_MPI=off KILN_CUDA=off npx kiln-build-native >"$work/build-native.log" 2>&1 || fail "kiln-build-native ($work/build-native.log)"
build_seconds=$(elapsed "$start")
tail -1 "$work/build-native.log"
node -e 'process.exit(require("./node_modules/@kiln/native/build/Release/kiln.node").testing ? 1 : 0)' ||
  fail "the source build has the test-only bindings"
cp node_modules/@kiln/native/build/Release/kiln.node "$repo/packages/native-linux-x64-gnu/kiln.node"
cd "$repo"

step "changeset publish (the rest)"
NPM_CONFIG_USERCONFIG=$publish_rc npx changeset publish --no-git-tag >"$work/publish.log" 2>&1 ||
  { tail -30 "$work/publish.log"; fail "changeset publish ($work/publish.log)"; }
sed -n '/published successfully/,$p' "$work/publish.log"

step "published tarballs: publint, are-the-types-wrong, contents"
bash tools/release/check-packages.sh "$work/storage/@kiln"/*/*.tgz

# A PATH with node and npm and nothing else: no compiler, no cmake.
nocc=$work/nocc-bin
mkdir -p "$nocc"
for tool in node npm npx; do ln -sf "$(command -v "$tool")" "$nocc/$tool"; done
! PATH=$nocc command -v cc c++ g++ gcc cmake make >/dev/null || fail "a compiler is on the no-compiler PATH"

generate_script='
  const { LLM } = require("@kiln/runtime");
  (async () => {
    const llm = await LLM.load();
    const result = await llm.generate("And the LORD said unto Moses,", { maxTokens: 16, temperature: 0 });
    await llm.dispose();
    if (!result.text) throw new Error("no text generated");
    console.log(JSON.stringify(result.text));
  })().catch((error) => { console.error(error.message); process.exit(1); });'

# install NAME PACKAGES... [-- NPM_FLAGS...]: an empty project with a fresh cache, no compiler on PATH.
install() {
  local name=$1
  shift
  local dir=$work/$name
  mkdir -p "$dir" && cd "$dir"
  printf '{ "name": "%s", "private": true }\n' "$name" >package.json
  printf 'registry=%s\n' "$registry" >.npmrc
  local start
  start=$(seconds)
  PATH=$nocc npm install --cache "$work/cache-$name" --no-audit --no-fund "$@" >"$work/install-$name.log" 2>&1 ||
    { cat "$work/install-$name.log"; fail "npm install $* ($name)"; }
  local took
  took=$(elapsed "$start")
  ! grep -q EBADENGINE "$work/install-$name.log" || { cat "$work/install-$name.log"; fail "an engine warning installing $*"; }
  local count
  count=$(find node_modules -name package.json -regextype egrep -regex '.*node_modules/(@[^/]+/)?[^/@][^/]*/package.json' | wc -l)
  printf '| %s | %s s | %s | %s packages |\n' "$*" "$took" "$(du -sh node_modules | cut -f1)" "$count" >>"$report"
}

{
  echo "# Release rehearsal $(date -u +%Y-%m-%dT%H:%MZ), $(git rev-parse --short HEAD), $(nproc) cores"
  echo
  echo "| install (fresh cache, loopback registry) | time | node_modules | size in packages |"
  echo "| --- | --- | --- | --- |"
} >"$report"

step "@kiln/cli alone: kiln generate"
install cli @kiln/cli
PATH=$nocc KILN_CACHE_DIR=$work/kiln-cache ./node_modules/.bin/kiln generate --prompt "And the LORD said unto Moses," \
  --max-tokens 16 --temperature 0 || fail "kiln generate"
echo

step "@kiln/runtime + @kiln/scribe-7m: generate through the API"
install runtime @kiln/runtime @kiln/scribe-7m
PATH=$nocc node -e "$generate_script" || fail "LLM.load().generate()"

step "the same with --omit=optional: the message that says what to do"
install runtime-no-prebuilt @kiln/runtime @kiln/scribe-7m --omit=optional
if PATH=$nocc node -e "$generate_script" 2>"$work/no-prebuilt.err"; then fail "generated without a binary"; fi
cat "$work/no-prebuilt.err"
grep -q 'npx kiln-build-native' "$work/no-prebuilt.err" || fail "the message does not give the source-build command"

step "the source-build project: @kiln/runtime + @kiln/scribe-7m with --omit=optional, on its own build"
cd "$source_project"
npm install --cache "$work/cache-source" --no-audit --no-fund --omit=optional @kiln/runtime @kiln/scribe-7m >/dev/null
[ ! -e node_modules/@kiln/native-linux-x64-gnu ] || fail "--omit=optional installed the prebuilt package"
node -e "$generate_script" || fail "generate on the source build"
cd "$repo"

step "plugin compatibility: a plugin built against a newer patch of @kiln/models, with the published CLI"
node -e '
  const fs = require("fs"), file = "packages/models/package.json", pkg = JSON.parse(fs.readFileSync(file, "utf8"));
  pkg.version = pkg.version.replace(/\d+$/, (patch) => String(Number(patch) + 1));
  fs.writeFileSync(file, JSON.stringify(pkg, null, 2) + "\n");'
echo "@kiln/models $(version packages/models)"
(cd packages/models && NPM_CONFIG_USERCONFIG=$publish_rc npm publish --registry "$registry" >"$work/publish-models.log" 2>&1) ||
  fail "npm publish @kiln/models patch ($work/publish-models.log)"
(cd packages/model-example && npm pack --pack-destination "$work" >"$work/pack-plugin.log" 2>&1) || fail "npm pack @kiln/model-example"
plugin=$(ls "$work"/kiln-model-example-*.tgz)
install plugin @kiln/cli "$plugin"
models=$(find node_modules -path '*/@kiln/models/package.json' | wc -l)
[ "$models" -eq 1 ] || { npm ls --all @kiln/models; fail "$models copies of @kiln/models"; }
echo "@kiln/cli $(node -p 'require("@kiln/cli/package.json").version') with @kiln/models $(node -p 'require("@kiln/models/package.json").version') (one copy)"
PATH=$nocc ./node_modules/.bin/kiln convert --list-architectures | grep -q TinyLlamaForCausalLM ||
  fail "the plugin's architecture is not listed"
PATH=$nocc KILN_CACHE_DIR=$work/kiln-cache ./node_modules/.bin/kiln generate --model "$repo/packages/model-example/fixtures/tiny_llama" \
  --input-ids 1,2,3 --max-tokens 4 --json || fail "kiln generate on the plugin's architecture"
cd "$repo"

{
  echo
  echo "Source build (\`npx kiln-build-native\`, KILN_MPI=off KILN_CUDA=off): $build_seconds s;" \
    "kiln.node $(du -h "$repo/packages/native-linux-x64-gnu/kiln.node" | cut -f1)."
  echo
  echo "| tarball | size |"
  echo "| --- | --- |"
  for tarball in "$work/storage/@kiln"/*/*.tgz; do
    printf '| %s | %s |\n' "$(basename "$tarball")" "$(du -h "$tarball" | cut -f1)"
  done
} >>"$report"
cat "$report"
step "passed"
