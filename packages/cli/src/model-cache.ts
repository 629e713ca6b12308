// The commands that take --model (generate, serve, bench) find or build its engine with the library's
// own resolveModel, the function LLM.load uses: one engine cache for code and command line.
import type { BuildConfig } from '@kiln/builder';
import { resolveModel } from '@kiln/runtime';
import { exitCleanlyOnSignals, ProgressLine } from './progress-line';

/**
 * The engine folder of --model (a Hugging Face model folder or a Hub id org/name[@revision]; default:
 * the built-in scribe-7m), downloaded, converted and built into the engine cache on first use. First-use
 * progress goes to a terminal's stderr only: scripts and pipes get nothing but the result.
 */
export async function engineForModel(model: string | undefined, build: Partial<BuildConfig>): Promise<string> {
  const progress = new ProgressLine();
  try {
    const resolved = await exitCleanlyOnSignals(() => resolveModel(model, { build, onProgress: (p) => progress.update(p.message) }));
    return resolved.engineDir;
  } finally {
    progress.clear();
  }
}
