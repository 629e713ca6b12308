// The timing-sensitive suites of a package (*.timing.test.ts), run one package at a time by
// `npm test`'s second phase: `nx run-many -t test:timing --parallel=1`.
module.exports = (packageConfig) => ({
  ...packageConfig,
  testMatch: ['<rootDir>/test/**/*.timing.test.ts'],
  testPathIgnorePatterns: ['/node_modules/'],
});
