// TinyLlamaForCausalLM, an architecture from outside @kiln/models, goes through the same acceptance
// pattern as the built-in ones (see packages/cli/test/reference-suite.ts): the kiln CLI finds this
// package by the `kiln.architectures` field of its package.json in a node_modules folder around the
// working directory — here a temporary project whose node_modules links to this package, exactly as
// `npm install @kiln/model-example` would.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { findArchitecturePlugins } from '@kiln/models';
import { kiln } from '../../cli/test/reference-util';
import { describeReferenceFixtures } from '../../cli/test/reference-suite';

const packageDir = path.resolve(__dirname, '..');
const project = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-plugin-project-'));
fs.mkdirSync(path.join(project, 'node_modules', '@kiln'), { recursive: true });
fs.symlinkSync(packageDir, path.join(project, 'node_modules', '@kiln', 'model-example'), 'dir');
const bare = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-bare-project-'));
afterAll(() => {
  fs.rmSync(project, { recursive: true, force: true });
  fs.rmSync(bare, { recursive: true, force: true });
});

describe('plugin discovery', () => {
  test('findArchitecturePlugins reads the kiln field of installed packages', () => {
    const plugins = findArchitecturePlugins(project);
    expect(plugins.find((p) => p.name === '@kiln/model-example')).toMatchObject({
      dir: fs.realpathSync(packageDir),
      architectures: ['TinyLlamaForCausalLM'],
    });
  });

  test('kiln convert --list-architectures shows it where it is installed', () => {
    const listed = kiln(['convert', '--list-architectures'], {}, project);
    expect(listed.status).toBe(0);
    expect(listed.stdout.split('\n')).toContain('TinyLlamaForCausalLM');
    expect(listed.stdout.split('\n')).toContain('LlamaForCausalLM');
    // Not from a folder without it (the CLI also looks beside its own installation, where a workspace
    // install links this package, so the negative case is checked without those paths).
    expect(findArchitecturePlugins(bare).map((p) => p.name)).not.toContain('@kiln/model-example');
  });

  test('a malformed kiln field fails the command naming the package.json', () => {
    const broken = path.join(bare, 'node_modules', 'broken-plugin');
    fs.mkdirSync(broken, { recursive: true });
    fs.writeFileSync(path.join(broken, 'package.json'), JSON.stringify({ name: 'broken-plugin', kiln: { architectures: 'X' } }));
    const run = kiln(['convert', '--list-architectures'], {}, bare);
    expect(run.status).not.toBe(0);
    expect(run.stderr).toContain(path.join(broken, 'package.json'));
    fs.rmSync(broken, { recursive: true, force: true });
  });
});

describeReferenceFixtures(['tiny_llama'], { modelsDir: path.join(packageDir, 'fixtures'), cwd: project });
