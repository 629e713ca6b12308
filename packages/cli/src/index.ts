export { createProgram, main } from './main';
export { CliError } from './errors';
export { defaultCacheDir, resolveModel } from './model-cache';
export type { ResolveModelOptions, ResolvedModel } from './model-cache';
export { writeFloat32Safetensors } from './logits-file';
export type { Float32Tensor } from './logits-file';
