export { convertCheckpoint, type ConvertOptions, type ConvertProgress, type ConvertResult } from './convert';
export {
  readKilnCheckpoint,
  CHECKPOINT_CONFIG_FILE,
  CHECKPOINT_FORMAT,
  CHECKPOINT_FORMAT_VERSION,
  CHECKPOINT_WEIGHTS_FILE,
  TOKENIZER_FILES,
  type KilnCheckpoint,
} from './checkpoint';
export { ConvertError } from './errors';
export { createTempDirBeside, removeStaleTempDirs } from './output-dir';
export { CHECKPOINT_DTYPES, isCheckpointDType, defaultDType, readHfConfig, type HfConfigFile } from './hf-config';
export { planConversion, type PlanInput } from './plan';
export { readHfWeights, type HfTensor, type HfWeights } from './weights';
export { exportGguf, GGUF_EXPORT_TYPES, type ExportGgufOptions, type ExportGgufResult, type GgufExportType } from './gguf/export';
export { defaultGgufDType } from './gguf/import';
export { GGUF_ARCHITECTURES, type GgufArchitecture } from './gguf/architectures';
export { GgufModelFile } from './gguf/gguf-file';
export { tokenizerFromGguf, mergesFromScores, TOKEN_TYPE, type GgufTokenizer } from './gguf/tokenizer';
export { rankWeightsFile } from './checkpoint';
export { shardCheckpoint, LM_HEAD_WEIGHT, type ShardOptions } from './shard';
export {
  MappingError,
  checkMapping,
  parallelFacts,
  splitRole,
  splitsVocabulary,
  stageLayers,
  stageOf,
  tensorShard,
  type ParallelFacts,
  type ParallelSizes,
  type SplitRole,
  type TensorRange,
  type TensorShard,
} from './parallel';
