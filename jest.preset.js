// Shared Jest setup: TypeScript through SWC (type checking is `tsc -b`'s job), tests run against each
// package's sources so they never see a stale dist/.
const path = require('node:path');
const root = __dirname;
module.exports = {
  testEnvironment: 'node',
  testMatch: ['<rootDir>/test/**/*.test.ts'],
  // *.timing.test.ts measure latency or memory: they run alone, in the `test:timing` phase after the
  // parallel one (see jest.timing.js), so other test processes do not skew what they measure.
  testPathIgnorePatterns: ['/node_modules/', '\\.timing\\.test\\.ts$'],
  transform: { '^.+\\.ts$': ['@swc/jest', { jsc: { target: 'es2022', parser: { syntax: 'typescript' } }, module: { type: 'commonjs' } }] },
  moduleNameMapper: {
    '^@kiln/native$': path.join(root, 'native/lib/index.ts'),
    '^@kiln/(core|models|convert|builder|runtime|sampling|cli|scribe-7m|server|hub|chat)$': path.join(root, 'packages/$1/src/index.ts'),
  },
  testTimeout: 120000,
};
