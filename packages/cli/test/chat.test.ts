// `kiln chat` in a real terminal: the built executable runs inside tmux (a pty), keys are typed with
// send-keys and the screen is read with capture-pane. Greedy answers must be the ones ChatSession gives
// for the same conversation; /reset, Ctrl-C at the prompt and Ctrl-D leave cleanly (exit status 0);
// Ctrl-C during an answer stops only the answer.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildEngine } from '@kiln/builder';
import { convertCheckpoint } from '@kiln/convert';
import { ChatSession, LLM } from '@kiln/runtime';
import { scribe7mPath } from '@kiln/scribe-7m';

const kilnBin = path.resolve(__dirname, '..', 'dist', 'bin', 'kiln.js');
const socket = `kiln-chat-test-${process.pid}`;
let tmpDir: string;
let engineDir: string;

function tmux(...args: string[]): string {
  const result = spawnSync('tmux', ['-L', socket, ...args], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`tmux ${args.join(' ')}: ${result.stderr}`);
  return result.stdout;
}

/** The pane's text (wrapped lines joined), polled until `predicate` holds or 60 s pass. */
async function waitForScreen(session: string, predicate: (screen: string) => boolean): Promise<string> {
  const deadline = Date.now() + 60000;
  let screen = '';
  while (Date.now() < deadline) {
    screen = tmux('capture-pane', '-p', '-J', '-S', '-200', '-t', session);
    if (predicate(screen)) return screen;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`timed out; the screen was:\n${screen}`);
}

function startChat(session: string, options = '--temperature 0 --max-tokens 16'): void {
  // The status after the command ends stays on the screen (and the pane with it) for the test to read.
  const command = `node ${kilnBin} chat --engine ${engineDir} ${options} --threads 1; echo "EXITED:$?"; sleep 60`;
  tmux('new-session', '-d', '-s', session, '-x', '200', '-y', '50', command);
}

beforeAll(async () => {
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-chat-cli-'));
  await convertCheckpoint({ modelDir: scribe7mPath, outputDir: path.join(tmpDir, 'checkpoint') });
  engineDir = path.join(tmpDir, 'scribe');
  await buildEngine({ checkpointDir: path.join(tmpDir, 'checkpoint'), outputDir: engineDir, config: { maxBatchSize: 4 } });
}, 300000);

afterAll(() => {
  spawnSync('tmux', ['-L', socket, 'kill-server']);
  fs.rmSync(tmpDir, { recursive: true, force: true });
});

it('answers as ChatSession does, keeps the conversation, resets, and leaves on Ctrl-C at the prompt', async () => {
  const llm = await LLM.load(engineDir, { numThreads: 1 });
  const reference = await ChatSession.create(llm);
  const first = (await reference.prompt('Who led the people out of Egypt?', { maxTokens: 16, temperature: 0 })).text.trim();
  const second = (await reference.prompt('And then?', { maxTokens: 16, temperature: 0 })).text.trim();
  reference.reset();
  const afterReset = (await reference.prompt('And then?', { maxTokens: 16, temperature: 0 })).text.trim();
  await llm.dispose();
  expect(afterReset).not.toBe(second);  // the reset is visible in the answer

  startChat('a');
  await waitForScreen('a', (s) => s.includes('> '));
  tmux('send-keys', '-t', 'a', 'Who led the people out of Egypt?', 'Enter');
  await waitForScreen('a', (s) => s.includes(first) && s.trimEnd().endsWith('>'));
  tmux('send-keys', '-t', 'a', 'And then?', 'Enter');
  await waitForScreen('a', (s) => s.includes(second) && s.trimEnd().endsWith('>'));
  tmux('send-keys', '-t', 'a', '/reset', 'Enter');
  await waitForScreen('a', (s) => s.includes('(conversation reset)'));
  tmux('send-keys', '-t', 'a', 'And then?', 'Enter');
  await waitForScreen('a', (s) => s.split('(conversation reset)')[1]?.includes(afterReset) === true && s.trimEnd().endsWith('>'));
  tmux('send-keys', '-t', 'a', 'C-c');
  await waitForScreen('a', (s) => s.includes('EXITED:0'));
});

it('leaves on Ctrl-D and on /exit', async () => {
  startChat('b');
  await waitForScreen('b', (s) => s.includes('> '));
  tmux('send-keys', '-t', 'b', 'C-d');
  await waitForScreen('b', (s) => s.includes('EXITED:0'));
  startChat('c');
  await waitForScreen('c', (s) => s.includes('> '));
  tmux('send-keys', '-t', 'c', '/exit', 'Enter');
  await waitForScreen('c', (s) => s.includes('EXITED:0'));
});

it('Ctrl-C during an answer stops it and keeps the conversation going; Ctrl-C right after Enter stops that answer', async () => {
  // scribe-7m answers in tens of milliseconds: the question and Ctrl-C are typed in one go, so the
  // Ctrl-C reaches kiln chat while the answer is queued or streaming, never at the prompt.
  startChat('d', '--temperature 1 --seed 5 --max-tokens 400');
  await waitForScreen('d', (s) => s.includes('> '));
  tmux('send-keys', '-t', 'd', 'Tell me the story of the flood.', 'Enter', 'C-c');
  await waitForScreen('d', (s) => s.includes('(stopped)') && s.trimEnd().endsWith('>'));
  // Still running: the next question is answered, then Ctrl-D leaves cleanly.
  tmux('send-keys', '-t', 'd', 'Who led the people out of Egypt?', 'Enter');
  await waitForScreen('d', (s) => (s.split('Who led the people out of Egypt?')[1] ?? '').trim().split('\n').length >= 2 && s.trimEnd().endsWith('>'));
  expect(tmux('capture-pane', '-p', '-J', '-S', '-200', '-t', 'd')).not.toContain('EXITED');
  tmux('send-keys', '-t', 'd', 'C-d');
  await waitForScreen('d', (s) => s.includes('EXITED:0'));
});
