// Shared by the server tests: scribe-7m converted and built once per test file into a temporary
// folder, a copy of the engine with a small chat template, SSE parsing and /metrics reading.
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildEngine, type BuildConfig } from '@kiln/builder';
import { convertCheckpoint } from '@kiln/convert';
import { scribe7mPath } from '@kiln/scribe-7m';

/** ChatML-like, with the bos token first: enough to check the template, its variables and the generation prompt. */
export const TEST_CHAT_TEMPLATE =
  "{{ bos_token }}{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

export interface TestEngines {
  workDir: string;
  /** scribe-7m as built, its chat template (chat_template.jinja) removed: a model without one. */
  engineDir: string;
  /** scribe-7m as built, with its own chat template. */
  defaultEngineDir: string;
  /** The same engine with TEST_CHAT_TEMPLATE in its tokenizer_config.json. */
  chatEngineDir: string;
  cleanup(): Promise<void>;
}

export async function buildTestEngines(buildConfig: Partial<BuildConfig> = { maxBatchSize: 64 }): Promise<TestEngines> {
  const workDir = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-server-'));
  const checkpointDir = path.join(workDir, 'checkpoint');
  const engineDir = path.join(workDir, 'scribe-7m');
  const defaultEngineDir = path.join(workDir, 'scribe-7m-default');
  const chatEngineDir = path.join(workDir, 'scribe-7m-chat');
  await convertCheckpoint({ modelDir: scribe7mPath, outputDir: checkpointDir });
  await buildEngine({ checkpointDir, outputDir: defaultEngineDir, config: buildConfig });
  await fs.cp(defaultEngineDir, chatEngineDir, { recursive: true });
  await fs.cp(defaultEngineDir, engineDir, { recursive: true });
  await fs.rm(path.join(engineDir, 'chat_template.jinja'));
  const configPath = path.join(chatEngineDir, 'tokenizer_config.json');
  const config = JSON.parse(await fs.readFile(configPath, 'utf8')) as Record<string, unknown>;
  await fs.writeFile(configPath, JSON.stringify({ ...config, chat_template: TEST_CHAT_TEMPLATE }, null, 2));
  return { workDir, engineDir, defaultEngineDir, chatEngineDir, cleanup: () => fs.rm(workDir, { recursive: true, force: true }) };
}

/** The `data:` payloads of an SSE body, in order. */
export function sseData(body: string): string[] {
  return body
    .split('\n\n')
    .map((event) => event.split('\n').filter((line) => line.startsWith('data: ')).map((line) => line.slice(6)).join('\n'))
    .filter((data) => data.length > 0);
}

/** Reads an SSE response as it arrives, calling `onData` per event; resolves at the end. */
export async function readSse(response: Response, onData: (data: string) => boolean | void): Promise<void> {
  const reader = (response.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end: number;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split('\n')) {
        if (line.startsWith('data: ') && onData(line.slice(6)) === false) {
          await reader.cancel();
          return;
        }
      }
    }
  }
}

/** One sample of a Prometheus text exposition, e.g. metric(text, 'kiln_kv_blocks_free'). */
export function metric(text: string, name: string, labels = ''): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const [key, value] = line.split(' ');
    if (key === `${name}${labels}`) return Number(value);
  }
  return undefined;
}
