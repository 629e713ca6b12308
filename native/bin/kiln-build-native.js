#!/usr/bin/env node
// `npx kiln-build-native`: builds kiln.node from the C++ sources this package ships, into
// build/Release/kiln.node beside them, where loadNative() looks before the prebuilt packages. For a
// platform without a prebuilt binary, or to build with CUDA or MPI (KILN_CUDA, KILN_MPI: auto|on|off).
// The test-only bindings are left out (KILN_TESTING=ON keeps them).
// Needs CMake 3.20+, a C++17 compiler, and cmake-js and node-addon-api installed in the project (they are
// optional peer dependencies of @kiln/native, so a normal install does not fetch them).
'use strict';
const { spawnSync } = require('node:child_process');
const os = require('node:os');
const path = require('node:path');

const packageRoot = path.resolve(__dirname, '..');
const peers = require('../package.json').peerDependencies;

function resolveTool(name, file) {
  try {
    return require.resolve(file, { paths: [process.cwd(), packageRoot] });
  } catch {
    return undefined;
  }
}

function fail(message) {
  console.error(`kiln-build-native: ${message}`);
  process.exit(1);
}

const cmakeJs = resolveTool('cmake-js', 'cmake-js/bin/cmake-js');
if (!cmakeJs || !resolveTool('node-addon-api', 'node-addon-api')) {
  fail(
    'cmake-js and node-addon-api are not installed. Install them, then run this again:\n' +
      `  npm install --no-save "cmake-js@${peers['cmake-js']}" "node-addon-api@${peers['node-addon-api']}"`,
  );
}
if (spawnSync('cmake', ['--version'], { stdio: 'ignore' }).status !== 0) {
  fail('CMake is not on PATH. Install CMake 3.20 or later and a C++17 compiler (Debian: apt-get install cmake g++).');
}

const out = path.join(packageRoot, 'build');
const jobs = String(os.availableParallelism?.() ?? os.cpus().length);
console.log(`kiln-build-native: building ${path.join(out, 'Release', 'kiln.node')} (${jobs} jobs)`);
const build = spawnSync(
  process.execPath,
  [cmakeJs, 'compile', '--directory', packageRoot, '--out', out, '--config', 'Release', '--parallel', jobs],
  // Without the test-only bindings unless asked (KILN_TESTING=ON): they are for Kiln's own tests.
  { stdio: 'inherit', cwd: packageRoot, env: { KILN_TESTING: 'OFF', ...process.env } },
);
if (build.status !== 0) fail(`the build failed (exit ${build.status ?? build.signal}); its output is above.`);

const addon = require(path.join(out, 'Release', 'kiln.node'));
console.log(`kiln-build-native: built and loaded (${JSON.stringify(addon.cpuInfo())})`);
