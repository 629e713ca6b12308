// Where kiln.node comes from. Prebuilt binaries ship as optional per-platform packages
// (@kiln/native-<os>-<arch>[-<libc>], as esbuild, onnxruntime-node and node-llama-cpp do it): npm installs
// only the one whose `os`, `cpu` and `libc` fields match the machine. Any other platform builds from the
// C++ sources that @kiln/native ships (`npx kiln-build-native`).
import * as fs from 'node:fs';
import * as path from 'node:path';

/** The platforms that have a prebuilt package. */
export const PREBUILT_PLATFORMS = ['linux-x64-gnu'];

export interface BinaryCandidate {
  /** Absolute path of a kiln.node. */
  path: string;
  /** Where it comes from: KILN_NATIVE_BINARY, a source build, or a package name. */
  source: string;
}

/** This machine's platform as package names spell it: linux-x64-gnu, linux-arm64-musl, darwin-arm64, win32-x64. */
export function platformTag(platform: string = process.platform, arch: string = process.arch): string {
  if (platform !== 'linux') return `${platform}-${arch}`;
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  return `${platform}-${arch}-${header?.glibcVersionRuntime ? 'gnu' : 'musl'}`;
}

/** True when an NVIDIA driver is loaded (Linux): a CUDA variant of the prebuilt package is then tried first. */
function hasNvidiaDriver(): boolean {
  return process.platform === 'linux' && fs.existsSync('/proc/driver/nvidia/version');
}

/** Prebuilt package names to try, best first: the CUDA variant where a driver is loaded, then the CPU one. */
export function prebuiltPackageNames(tag: string = platformTag(), cuda: boolean = hasNvidiaDriver()): string[] {
  return [...(cuda ? [`@kiln/native-${tag}-cuda`] : []), `@kiln/native-${tag}`];
}

function resolvePrebuilt(name: string): string | undefined {
  try {
    return path.join(path.dirname(require.resolve(`${name}/package.json`)), 'kiln.node');
  } catch {
    return undefined; // not installed: npm skipped it (another platform, or --omit=optional)
  }
}

/**
 * The places kiln.node is looked for, in order: KILN_NATIVE_BINARY alone when it is set; otherwise a
 * source build inside @kiln/native (build/Release/kiln.node, made by `kiln-build-native` or, in the Kiln
 * repository, by `npm ci`), then the installed prebuilt packages.
 */
export function binaryCandidates(packageRoot: string): BinaryCandidate[] {
  const override = process.env.KILN_NATIVE_BINARY;
  if (override) return [{ path: path.resolve(override), source: 'KILN_NATIVE_BINARY' }];
  const candidates: BinaryCandidate[] = [
    { path: path.join(packageRoot, 'build', 'Release', 'kiln.node'), source: 'source build' },
  ];
  for (const name of prebuiltPackageNames()) {
    const file = resolvePrebuilt(name);
    if (file) candidates.push({ path: file, source: name });
  }
  return candidates;
}

/** The commands that build kiln.node from the shipped sources, with the build tools' versions. */
export function sourceBuildHint(packageRoot: string): string {
  let peers: Record<string, string> = {};
  try {
    peers = JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8')).peerDependencies ?? {};
  } catch {
    // the versions are a hint only
  }
  const tool = (name: string) => (peers[name] ? `"${name}@${peers[name]}"` : name);
  return [
    `  npm install --no-save ${tool('cmake-js')} ${tool('node-addon-api')}`,
    '  npx kiln-build-native',
    '(needs CMake 3.20 or later and a C++17 compiler; it builds into ' +
      `${path.join(packageRoot, 'build', 'Release', 'kiln.node')}). ` +
      'Or set KILN_NATIVE_BINARY to the path of a kiln.node you built.',
  ].join('\n');
}

/** What a consumer reads when no kiln.node is found: why, and the commands that fix it. */
export function missingBinaryMessage(packageRoot: string, tag: string): string {
  const prebuilt = PREBUILT_PLATFORMS.includes(tag)
    ? `@kiln/native-${tag} is not installed (npm skips optional dependencies under --omit=optional). ` +
      `Reinstall without that flag, or build from source:`
    : `No prebuilt binary exists for ${tag} (prebuilt: ${PREBUILT_PLATFORMS.join(', ')}). Build one from source:`;
  return [
    `Kiln's native addon (kiln.node) is not installed for this platform (${tag}, Node ${process.version}).`,
    prebuilt,
    sourceBuildHint(packageRoot),
  ].join('\n');
}
