import * as fs from 'node:fs';
import * as path from 'node:path';
import type { NativeAddon } from './types';
import { binaryCandidates, missingBinaryMessage, platformTag, sourceBuildHint, type BinaryCandidate } from './binary';

export * from './types';
export type { NativeTesting } from './testing-types';
export { binaryCandidates, platformTag, prebuiltPackageNames } from './binary';

let cached: NativeAddon | undefined;

function loadFrom(candidate: BinaryCandidate, packageRoot: string): NativeAddon {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require(candidate.path) as NativeAddon;
  } catch (error) {
    const message = `Kiln's native addon at ${candidate.path} (${candidate.source}) failed to load: ${(error as Error).message}`;
    // A prebuilt binary that does not fit this machine (an older glibc, say): a source build would.
    if (!candidate.source.startsWith('@kiln/')) throw new Error(message);
    throw new Error(`${message}\nBuild one for this machine from source instead:\n${sourceBuildHint(packageRoot)}`);
  }
}

/**
 * The one place the `.node` file is loaded, from the first of (see binaryCandidates):
 * KILN_NATIVE_BINARY; a source build in this package (`kiln-build-native`, or `npm ci` in the Kiln
 * repository); the prebuilt package for this platform (an optional dependency, e.g.
 * @kiln/native-linux-x64-gnu). With none of them, it throws a message that says what to do.
 */
export function loadNative(): NativeAddon {
  if (cached) return cached;
  const packageRoot = path.resolve(__dirname, '..');
  const candidates = binaryCandidates(packageRoot);
  const found = candidates.find((c) => fs.existsSync(c.path));
  if (found) {
    cached = loadFrom(found, packageRoot);
    return cached;
  }
  const override = candidates.find((c) => c.source === 'KILN_NATIVE_BINARY');
  if (override) throw new Error(`KILN_NATIVE_BINARY names ${override.path}, which does not exist.`);
  throw new Error(missingBinaryMessage(packageRoot, platformTag()));
}
