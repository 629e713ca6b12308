// Architectures from outside @kiln/models: an installed package that declares
//   "kiln": { "architectures": ["XForCausalLM", ...] }
// in its package.json registers them (registerArchitecture) when it is required. The loader only reads
// package.json files of folders already on disk — no network, no install — and is bounded: it looks at
// the `node_modules` folders of a start folder and its parents (plus the caller's own resolution paths),
// one level of packages and one of @scopes in each.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { listArchitectures } from './registry';

export interface ArchitecturePlugin {
  /** Package name, e.g. "@kiln/model-example". */
  name: string;
  /** Its folder. */
  dir: string;
  /** The architectures its package.json declares. */
  architectures: string[];
}

/** Reading more than this many package folders means something is off (a huge or looping tree). */
const MAX_PACKAGES_SCANNED = 20_000;
/** A package.json larger than this is not read. */
const MAX_PACKAGE_JSON_BYTES = 1 << 20;

/** The node_modules folders a package required from `fromDir` could live in: fromDir's and its parents'. */
function nodeModulesChain(fromDir: string): string[] {
  const dirs: string[] = [];
  let dir = path.resolve(fromDir);
  for (;;) {
    if (path.basename(dir) !== 'node_modules') dirs.push(path.join(dir, 'node_modules'));
    const parent = path.dirname(dir);
    if (parent === dir) return dirs;
    dir = parent;
  }
}

function readPackageJson(dir: string): Record<string, unknown> | undefined {
  const file = path.join(dir, 'package.json');
  try {
    const stat = fs.statSync(file);
    if (!stat.isFile() || stat.size > MAX_PACKAGE_JSON_BYTES) return undefined;
    const json: unknown = JSON.parse(fs.readFileSync(file, 'utf8'));
    return json && typeof json === 'object' && !Array.isArray(json) ? (json as Record<string, unknown>) : undefined;
  } catch {
    // Unreadable or not JSON: not a package we can load; npm would not load it either.
    return undefined;
  }
}

function listDir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

/**
 * Installed packages that declare Kiln architectures, found in the node_modules folders of `fromDir` and
 * its parents, and of `extraSearchPaths` (e.g. a CLI's `require.resolve.paths('')`). Each package is
 * reported once (the first folder found wins, as Node's resolution would). A package.json whose `kiln`
 * field is malformed fails, naming the file.
 */
export function findArchitecturePlugins(fromDir: string = process.cwd(), extraSearchPaths: string[] = []): ArchitecturePlugin[] {
  const roots = [...nodeModulesChain(fromDir), ...extraSearchPaths.map((p) => path.resolve(p))];
  const seenRoots = new Set<string>();
  const plugins = new Map<string, ArchitecturePlugin>();
  let scanned = 0;
  const consider = (dir: string) => {
    if (++scanned > MAX_PACKAGES_SCANNED) {
      throw new Error(`architecture plugins: gave up after ${MAX_PACKAGES_SCANNED} package folders (last: ${dir})`);
    }
    const json = readPackageJson(dir);
    if (!json || json.kiln === undefined) return;
    const name = typeof json.name === 'string' ? json.name : path.basename(dir);
    if (plugins.has(name)) return;
    const kiln = json.kiln as Record<string, unknown> | null;
    const architectures = kiln && typeof kiln === 'object' ? kiln.architectures : undefined;
    if (architectures === undefined) return; // a `kiln` field for something else
    if (!Array.isArray(architectures) || !architectures.every((a) => typeof a === 'string' && a.length > 0)) {
      throw new Error(`${path.join(dir, 'package.json')}: kiln.architectures: expected a list of architecture names`);
    }
    plugins.set(name, { name, dir: fs.realpathSync(dir), architectures: architectures as string[] });
  };
  for (const root of roots) {
    if (seenRoots.has(root)) continue;
    seenRoots.add(root);
    for (const entry of listDir(root)) {
      if (entry.startsWith('.')) continue;
      const dir = path.join(root, entry);
      if (entry.startsWith('@')) {
        for (const scoped of listDir(dir)) if (!scoped.startsWith('.')) consider(path.join(dir, scoped));
      } else {
        consider(dir);
      }
    }
  }
  return [...plugins.values()];
}

const loaded = new Map<string, ArchitecturePlugin>();

/**
 * Finds the architecture plugins installed around `fromDir` (see findArchitecturePlugins) and requires
 * each once; requiring registers its architectures. Fails naming the package when requiring it throws or
 * when it does not register an architecture it declares. Returns the plugins loaded by this call or before.
 */
export function loadArchitecturePlugins(fromDir: string = process.cwd(), extraSearchPaths: string[] = []): ArchitecturePlugin[] {
  for (const plugin of findArchitecturePlugins(fromDir, extraSearchPaths)) {
    if (loaded.has(plugin.name)) continue;
    try {
      // The plugin's own `main`/`exports` decide what runs; it imports @kiln/models and registers.
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      require(plugin.dir);
    } catch (error) {
      throw new Error(`architecture plugin ${plugin.name} (${plugin.dir}) failed to load: ${(error as Error).message}`);
    }
    const registered = new Set(listArchitectures());
    const missing = plugin.architectures.filter((name) => !registered.has(name));
    if (missing.length > 0) {
      throw new Error(
        `architecture plugin ${plugin.name} declares ${missing.join(', ')} in its package.json but did not register ` +
          `${missing.length > 1 ? 'them' : 'it'} (is its @kiln/models the same copy as the CLI's?)`,
      );
    }
    loaded.set(plugin.name, plugin);
  }
  return [...loaded.values()];
}
