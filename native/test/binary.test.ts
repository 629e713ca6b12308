// Issue 17: where kiln.node comes from in a consumer's install. Each case copies @kiln/native's built
// loader (dist/, package.json, bin/) into a temporary project, as npm would install it, and loads it in a
// child process: the prebuilt platform package when it is installed, the clear message when neither it
// nor a source build is there, KILN_NATIVE_BINARY when set. (The source build itself, `kiln-build-native`
// from the packed sources, runs in the release rehearsal: tools/release/rehearse.sh.)
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { missingBinaryMessage, prebuiltPackageNames } from '../lib/binary';

const NATIVE = path.resolve(__dirname, '..');
const BUILT = path.join(NATIVE, 'build', 'Release', 'kiln.node');
let dir: string;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-binary-'));
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** A project with @kiln/native installed (no build/ folder), and the prebuilt package if asked. */
function project(name: string, withPrebuilt: boolean): string {
  const root = path.join(dir, name);
  const native = path.join(root, 'node_modules', '@kiln', 'native');
  fs.mkdirSync(native, { recursive: true });
  for (const entry of ['dist', 'bin', 'package.json']) fs.cpSync(path.join(NATIVE, entry), path.join(native, entry), { recursive: true });
  if (withPrebuilt) {
    const prebuilt = path.join(root, 'node_modules', '@kiln', 'native-linux-x64-gnu');
    fs.mkdirSync(prebuilt, { recursive: true });
    fs.copyFileSync(path.join(NATIVE, '..', 'packages', 'native-linux-x64-gnu', 'package.json'), path.join(prebuilt, 'package.json'));
    fs.copyFileSync(BUILT, path.join(prebuilt, 'kiln.node'));
  }
  return root;
}

/** Runs `script` in a Node child in `cwd`, without the test run's KILN_NATIVE_BINARY or sanitizer preload. */
function node(cwd: string, script: string, env: Record<string, string> = {}, args: string[] = ['-e', script]) {
  const { KILN_NATIVE_BINARY: _binary, LD_PRELOAD: _preload, ...rest } = process.env;
  return spawnSync(process.execPath, args, { cwd, env: { ...rest, ...env }, encoding: 'utf8' });
}

const LOAD = `const n = require('@kiln/native'); n.loadNative(); console.log(n.binaryCandidates(require.resolve('@kiln/native/package.json').replace('/package.json', '')).map((c) => c.source).join(','));`;

const linuxX64Gnu = process.platform === 'linux' && process.arch === 'x64';

(linuxX64Gnu ? test : test.skip)('loads the prebuilt platform package when it is installed', () => {
  const result = node(project('prebuilt', true), LOAD);
  expect(result.stderr).toBe('');
  expect(result.status).toBe(0);
  expect(result.stdout.trim()).toContain('@kiln/native-linux-x64-gnu');
});

test('with neither the prebuilt package nor a source build, the message says what to do', () => {
  const root = project('missing', false);
  const result = node(root, LOAD);
  expect(result.status).not.toBe(0);
  expect(result.stderr).toContain("Kiln's native addon (kiln.node) is not installed for this platform");
  expect(result.stderr).toContain('npm install --no-save "cmake-js@^8.0.0" "node-addon-api@^8.9.2"');
  expect(result.stderr).toContain('npx kiln-build-native');
  expect(result.stderr).toContain(path.join(root, 'node_modules', '@kiln', 'native', 'build', 'Release', 'kiln.node'));
  expect(result.stderr).toContain('KILN_NATIVE_BINARY');
});

(linuxX64Gnu ? test : test.skip)('a prebuilt binary that does not load on this machine points at the source build', () => {
  const root = project('broken-prebuilt', true);
  fs.writeFileSync(path.join(root, 'node_modules', '@kiln', 'native-linux-x64-gnu', 'kiln.node'), 'not a shared library');
  const result = node(root, LOAD);
  expect(result.status).not.toBe(0);
  expect(result.stderr).toContain('(@kiln/native-linux-x64-gnu) failed to load');
  expect(result.stderr).toContain('Build one for this machine from source instead:');
  expect(result.stderr).toContain('npx kiln-build-native');
});

test('kiln-build-native without cmake-js says which packages to install', () => {
  const root = project('no-cmake-js', false);
  const result = node(root, '', {}, [path.join(root, 'node_modules', '@kiln', 'native', 'bin', 'kiln-build-native.js')]);
  expect(result.status).toBe(1);
  expect(result.stderr).toContain('cmake-js and node-addon-api are not installed');
  expect(result.stderr).toContain('npm install --no-save "cmake-js@^8.0.0" "node-addon-api@^8.9.2"');
});

test('KILN_NATIVE_BINARY wins, and a wrong one is named', () => {
  const root = project('override', true);
  expect(node(root, LOAD, { KILN_NATIVE_BINARY: BUILT }).stdout.trim()).toBe('KILN_NATIVE_BINARY');
  const missing = node(root, LOAD, { KILN_NATIVE_BINARY: path.join(root, 'nope.node') });
  expect(missing.status).not.toBe(0);
  expect(missing.stderr).toContain(`KILN_NATIVE_BINARY names ${path.join(root, 'nope.node')}, which does not exist.`);
});

test('platforms without a prebuilt package are told to build from source; CUDA variants come first', () => {
  expect(missingBinaryMessage(NATIVE, 'linux-arm64-musl')).toContain(
    'No prebuilt binary exists for linux-arm64-musl (prebuilt: linux-x64-gnu). Build one from source:',
  );
  expect(missingBinaryMessage(NATIVE, 'linux-x64-gnu')).toContain('@kiln/native-linux-x64-gnu is not installed');
  expect(prebuiltPackageNames('linux-x64-gnu', true)).toEqual(['@kiln/native-linux-x64-gnu-cuda', '@kiln/native-linux-x64-gnu']);
  expect(prebuiltPackageNames('darwin-arm64', false)).toEqual(['@kiln/native-darwin-arm64']);
});
