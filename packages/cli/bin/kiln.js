#!/usr/bin/env node
// The `kiln` executable npm links into node_modules/.bin. It is a committed file, not build output,
// because npm links a bin only if its target exists at install time, and `dist/` is built afterwards
// (by the root "prepare" script).
require('../dist/bin/kiln.js');
