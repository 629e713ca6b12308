import * as core from '@kiln/core';
test('loads', () => { expect(core).toBeDefined(); });
