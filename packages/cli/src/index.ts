export { createProgram, main } from './main';
export { CliError } from './errors';
// The engine cache lives in @kiln/runtime (LLM.load); re-exported for existing callers.
export { defaultCacheDir, resolveModel } from '@kiln/runtime';
export type { ResolveModelOptions, ResolvedModel } from '@kiln/runtime';
export { writeFloat32Safetensors } from './logits-file';
export type { Float32Tensor } from './logits-file';
