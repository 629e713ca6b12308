// The ops suite again with split-K decode attention forced on short windows: every decode step's
// (token, query head) rows split their keys over blocks of at least 8 (KILN_CUDA_ATTENTION_SPLIT_KEYS,
// read once by the native library when the first attention binds; the default of 256 keys leaves the
// suite's prompts unsplit). Every attention variant (GQA, MQA, sliding window, softcap, ALiBi, head dims
// 64 and 128, float32 and 16-bit caches) must still match the cpu kernels, in captured decode steps too.
process.env.KILN_CUDA_ATTENTION_SPLIT_KEYS = '8';
await import('./ops.test.mjs');
