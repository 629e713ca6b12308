import * as core from '@kiln/native';
test('loads', () => { expect(core).toBeDefined(); });
