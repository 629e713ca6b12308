import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** The Hub Kiln talks to: `$HF_ENDPOINT`, else https://huggingface.co. */
export function defaultHubUrl(): string {
  return (process.env.HF_ENDPOINT || 'https://huggingface.co').replace(/\/+$/, '');
}

/** `$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface` (as huggingface_hub). */
export function hfHome(): string {
  if (process.env.HF_HOME) return path.resolve(process.env.HF_HOME);
  return path.join(process.env.XDG_CACHE_HOME ? path.resolve(process.env.XDG_CACHE_HOME) : path.join(os.homedir(), '.cache'), 'huggingface');
}

/**
 * Where downloaded models are kept, in huggingface_hub's layout (so Python's transformers and Kiln share
 * it): `$HF_HUB_CACHE`, else `$HF_HOME/hub` (see hfHome).
 */
export function hubCacheDir(): string {
  const explicit = process.env.HF_HUB_CACHE || process.env.HUGGINGFACE_HUB_CACHE;
  return explicit ? path.resolve(explicit) : path.join(hfHome(), 'hub');
}

/** `$HF_HUB_OFFLINE` set to 1 / true / yes / on. */
export function offlineFromEnv(): boolean {
  return /^(1|true|yes|on)$/i.test(process.env.HF_HUB_OFFLINE ?? '');
}

/**
 * The access token: `$HF_TOKEN`, else `$HUGGING_FACE_HUB_TOKEN`, else the file `huggingface-cli login`
 * writes (`$HF_TOKEN_PATH`, else `$HF_HOME/token`). Undefined when there is none.
 */
export async function tokenFromEnv(): Promise<string | undefined> {
  const fromEnv = process.env.HF_TOKEN || process.env.HUGGING_FACE_HUB_TOKEN;
  if (fromEnv) return fromEnv.trim();
  const file = process.env.HF_TOKEN_PATH ? path.resolve(process.env.HF_TOKEN_PATH) : path.join(hfHome(), 'token');
  const text = await fs.readFile(file, 'utf8').catch(() => '');
  return text.trim() || undefined;
}
