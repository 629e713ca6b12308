import * as fs from 'node:fs';
import * as path from 'node:path';
import type { NativeAddon } from './types';

export * from './types';
export type { NativeTesting } from './testing-types';

let cached: NativeAddon | undefined;

/**
 * The one place the `.node` file is loaded. KILN_NATIVE_BINARY overrides the path (for side-by-side
 * builds); otherwise it is cmake-js' output beside this package.
 */
export function loadNative(): NativeAddon {
  if (cached) return cached;
  const packageRoot = path.resolve(__dirname, '..');
  const binary = process.env.KILN_NATIVE_BINARY ?? path.join(packageRoot, 'build', 'Release', 'kiln.node');
  if (!fs.existsSync(binary)) {
    throw new Error(
      `Kiln's native addon is missing at ${binary}. Build it with \`npm run build:native\` ` +
        '(needs cmake and a C++17 compiler).',
    );
  }
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    cached = require(binary) as NativeAddon;
  } catch (error) {
    throw new Error(`Kiln's native addon at ${binary} failed to load: ${(error as Error).message}`);
  }
  return cached;
}
