// config.json of an engine directory is untrusted like the engine file, and the runtime reads things
// from both (gatherContextLogits and the end ids from config.json; limits and the vocabulary from the
// engine header). An edited config.json (maxBatchSize, vocabSize, dtype...) used to be ignored where it
// disagreed with the engine (issue 16); it is now refused, naming the key and both values.
import * as path from 'node:path';
import type { NativeEngine, NativeEngineInfo } from '@kiln/native';
import type { EngineDirConfig } from './engine-config';

function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null || Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a as object);
  const kb = Object.keys(b as object);
  return ka.length === kb.length && ka.every((k) => sameJson((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

/** Throws naming `<engineDir>/config.json`, the key, and what the engine file says, on any disagreement. */
export function checkConfigAgainstEngine(engineDir: string, config: EngineDirConfig, info: NativeEngineInfo): void {
  const file = path.join(engineDir, 'config.json');
  const engineFile = path.join(engineDir, config.engineFiles[0]);
  const mismatch = (key: string, given: unknown, actual: unknown): never => {
    throw new Error(`${file}: "${key}" is ${JSON.stringify(given)} but ${engineFile} says ${JSON.stringify(actual)}: the engine directory was edited or mixed up; rebuild it with \`kiln build\``);
  };
  const build = config.buildConfig;
  const limits: [string, number][] = [
    ['maxBatchSize', info.maxBatchSize],
    ['maxSeqLen', info.maxSeqLen],
    ['maxNumTokens', info.maxNumTokens],
    ['maxBeamWidth', info.maxBeamWidth],
  ];
  for (const [key, actual] of limits) {
    if (build[key] !== undefined && build[key] !== actual) mismatch(`buildConfig.${key}`, build[key], actual);
  }
  // The engine gathers logits of every prompt token iff it has a logits row per packed token.
  const gathers = build.gatherContextLogits === true;
  const expectedRows = gathers ? info.maxNumTokens : info.maxBatchSize;
  if (info.maxLogitRows !== expectedRows) mismatch('buildConfig.gatherContextLogits', build.gatherContextLogits, `${info.maxLogitRows} logit rows`);
  const target = config.target as Record<string, unknown>;
  if (target.backend !== undefined && target.backend !== info.backend) mismatch('target.backend', target.backend, info.backend);
  if (build.target !== undefined && build.target !== info.backend) mismatch('buildConfig.target', build.target, info.backend);
  if (info.backend === 'cuda') {
    if (target.computeCapability !== info.computeCapability) mismatch('target.computeCapability', target.computeCapability, info.computeCapability);
    if (build.dtype !== undefined && build.dtype !== info.activationDType) mismatch('buildConfig.dtype', build.dtype, info.activationDType);
  }
  // The header's model object is { architecture, ...checkpoint.model } (see @kiln/builder).
  const model = JSON.parse(info.modelJson) as Record<string, unknown>;
  if (info.vocabSize !== (config.checkpoint.model as Record<string, unknown>).vocabSize) {
    mismatch('checkpoint.model.vocabSize', (config.checkpoint.model as Record<string, unknown>).vocabSize, info.vocabSize);
  }
  if (model.architecture !== undefined && model.architecture !== config.checkpoint.architecture) {
    mismatch('checkpoint.architecture', config.checkpoint.architecture, model.architecture);
  }
  // Every model setting the header records must be the one config.json records.
  const configModel = config.checkpoint.model as Record<string, unknown>;
  for (const [key, value] of Object.entries(model)) {
    if (key !== 'architecture' && !sameJson(configModel[key], value)) mismatch(`checkpoint.model.${key}`, configModel[key], value);
  }
}

/** checkConfigAgainstEngine, disposing the native engine when it throws (nothing is left loaded). */
export function checkLoadedEngine(engineDir: string, config: EngineDirConfig, native: NativeEngine): void {
  try {
    checkConfigAgainstEngine(engineDir, config, native.info);
  } catch (error) {
    native.dispose();
    throw error;
  }
}
