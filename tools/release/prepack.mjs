// Every package's `prepack` (npm pack and npm publish run it in the package's folder): puts the
// repository's LICENSE into the package, and builds what the tarball ships from a clean dist/, so that a
// fresh clone packs complete tarballs and no stale output is shipped. With --binary (the prebuilt
// platform packages), it checks that kiln.node is there instead: tools/release/build-prebuilt.sh makes it.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const dir = process.cwd();
fs.copyFileSync(path.join(root, 'LICENSE'), path.join(dir, 'LICENSE'));

if (process.argv.includes('--binary')) {
  if (!fs.existsSync(path.join(dir, 'kiln.node'))) {
    console.error(`${path.relative(root, dir)}/kiln.node is missing: make it with tools/release/build-prebuilt.sh`);
    process.exit(1);
  }
} else if (fs.existsSync(path.join(dir, 'tsconfig.json'))) {
  // `changeset publish` packs packages concurrently, and `tsc -b` builds a package's references too: one
  // build at a time, or one package's clean dist/ would vanish under another's build.
  const lock = path.join(root, 'node_modules', '.kiln-prepack.lock');
  for (;;) {
    try {
      fs.mkdirSync(lock);
      break;
    } catch (error) {
      if (error.code !== 'EEXIST') throw error;
      // A lock older than ten minutes was left by a pack that died.
      if (Date.now() - fs.statSync(lock, { throwIfNoEntry: false })?.mtimeMs > 600_000) fs.rmSync(lock, { recursive: true, force: true });
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
    }
  }
  try {
    fs.rmSync(path.join(dir, 'dist'), { recursive: true, force: true });
    const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    execFileSync(process.execPath, [tsc, '-b', dir], { stdio: 'inherit' });
  } finally {
    fs.rmSync(lock, { recursive: true, force: true });
  }
}
