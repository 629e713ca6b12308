// The one place xgrammar's WebAssembly build (@mlc-ai/web-xgrammar, Apache-2.0; the engine behind
// TensorRT-LLM's, vLLM's and SGLang's guided decoding) is loaded. See docs/decisions/0011-structured-output-with-xgrammar.md.
//
// Its package says "type": "module" but its lib/index.js is a UMD bundle that needs CommonJS's
// `require` and `__filename` (to find nothing: the .wasm is inlined as base64, so it loads with no
// file or network access). Node refuses it both as ESM and through require(); compiling the bundle as
// a CommonJS module is the way it runs.
import { readFileSync } from 'node:fs';
import Module from 'node:module';
import * as path from 'node:path';

export interface XgTokenizerInfo {
  getVocabSize(): number;
  dispose(): void;
}
export interface XgCompiledGrammar {
  dispose(): void;
}
export interface XgGrammarCompiler {
  compileJSONSchema(schema: string, anyWhitespace?: boolean, indent?: number, separators?: [string, string], strictMode?: boolean): Promise<XgCompiledGrammar>;
  compileBuiltinJSONGrammar(): Promise<XgCompiledGrammar>;
  compileGrammar(grammar: string, rootRule?: string): Promise<XgCompiledGrammar>;
  dispose(): void;
}
export interface XgGrammarMatcher {
  acceptToken(tokenId: number): boolean;
  getNextTokenBitmask(): Promise<Int32Array>;
  isTerminated(): boolean;
  dispose(): void;
}
export interface Xgrammar {
  Testings: {
    _jsonSchemaToEBNF(schema: string, anyWhitespace?: boolean, indent?: number, separators?: [string, string], strictMode?: boolean): Promise<string>;
  };
  TokenizerInfo: {
    createTokenizerInfo(encodedVocab: string[], vocabType: string, prependSpace: boolean, vocabSize: number, stopTokenIds: number[]): Promise<XgTokenizerInfo>;
  };
  GrammarCompiler: { createGrammarCompiler(info: XgTokenizerInfo, cacheEnabled?: boolean): Promise<XgGrammarCompiler> };
  GrammarMatcher: {
    createGrammarMatcher(compiled: XgCompiledGrammar, overrideStopTokens?: number[], terminateWithoutStopToken?: boolean): Promise<XgGrammarMatcher>;
  };
}

let loading: Promise<Xgrammar> | undefined;
// Where xgrammar's stderr lines go: the capture of the call in progress (withXgrammarErrors), else stderr.
let capture: string[] | undefined;

/** xgrammar, loaded once (about 0.2 s: it compiles 1 MB of WebAssembly). */
export function loadXgrammar(): Promise<Xgrammar> {
  loading ??= load();
  return loading;
}

async function load(): Promise<Xgrammar> {
  let file: string;
  try {
    file = require.resolve('@mlc-ai/web-xgrammar/package.json');
  } catch {
    throw new Error('@kiln/chat needs @mlc-ai/web-xgrammar (a dependency of @kiln/chat): reinstall with `npm ci`');
  }
  file = path.join(path.dirname(file), 'lib', 'index.js');
  type CompilableModule = { exports: unknown; filename: string; paths: string[]; _compile(source: string, filename: string): void };
  const ModuleClass = Module as unknown as {
    new (id: string, parent?: unknown): CompilableModule;
    _nodeModulePaths(dir: string): string[];
  };
  // The WebAssembly module binds console.error when it starts (its printErr): give it a function that
  // routes its lines to the capture of the call in progress.
  const original = console.error;
  console.error = (...parts: unknown[]): void => {
    if (capture) capture.push(parts.map(String).join(' '));
    else original(...parts);
  };
  try {
    const bundle = new ModuleClass(file, module);
    bundle.filename = file;
    bundle.paths = ModuleClass._nodeModulePaths(path.dirname(file));
    bundle._compile(readFileSync(file, 'utf8'), file);
    const xgrammar = bundle.exports as Xgrammar & { Grammar: { builtinJSONGrammar(): Promise<{ dispose(): void }> } };
    (await xgrammar.Grammar.builtinJSONGrammar()).dispose();  // starts the module now, within this window
    return xgrammar;
  } finally {
    console.error = original;
  }
}

/**
 * Runs an xgrammar call that may fail. Its C++ checks print "[FATAL] <file>:<line>: <message>" on
 * stderr and abort (the error thrown says only "Aborted()"): the message is caught here instead and
 * becomes the error's, so that callers can name what is wrong. Calls are serialized (one capture).
 */
export async function withXgrammarErrors<T>(call: () => Promise<T>): Promise<T> {
  await loadXgrammar();
  const run = queue.then(async () => {
    const lines: string[] = [];
    capture = lines;
    // Where console.error is not the one the module bound (a test runner's sandbox), its lines still
    // reach process.stderr.
    const write = process.stderr.write;
    process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]): boolean => {
      const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
      if (text.includes('[FATAL]') || text.startsWith('Aborted(')) {
        lines.push(text);
        return true;
      }
      return (write as (...args: unknown[]) => boolean).call(process.stderr, chunk, ...rest);
    }) as typeof process.stderr.write;
    try {
      return await call();
    } catch (error) {
      const fatal = lines.find((line) => line.includes('[FATAL]'));
      const detail = fatal ? fatal.replace(/^.*\[FATAL\]\s*\S+:\d+:\s*/, '') : (error as Error).message;
      throw new Error(detail);
    } finally {
      capture = undefined;
      process.stderr.write = write;
    }
  });
  queue = run.catch(() => undefined);
  return run;
}
let queue: Promise<unknown> = Promise.resolve();
