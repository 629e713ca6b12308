export { Engine } from './engine';
export type { EngineGenerateOptions, EngineGenerateResult, EngineInfo, EngineLoadOptions, FinishReason } from './engine';
export { ENGINE_DIR_FORMAT, ENGINE_DIR_FORMAT_VERSION, readEngineDirConfig } from './engine-config';
export type { EngineCheckpointInfo, EngineDirConfig } from './engine-config';
export { ChatSession, defineChatSessionFunction } from './chat-session';
export type { ChatPromptOptions, ChatSessionFunction, ChatSessionOptions } from './chat-session';
export { LLM } from './llm';
export type { LLMGenerateOptions, LLMGenerateResult, LLMLoadOptions, LLMSequence, LLMStreamChunk, LLMStreamOptions } from './llm';
export { cleanEngineCache, defaultCacheDir, listEngineCache, resolveModel } from './model-cache';
export type { CleanEngineCacheOptions, EngineCacheEntry, LoadProgress, ModelSourceKind, ResolvedModel, ResolveModelOptions } from './model-cache';
export { StreamDecoder, Tokenizer } from './tokenizer';
export type { DecodeOptions } from './tokenizer';
export { hostTarget } from './host';
export type { HostTarget } from './host';
export { Executor } from './executor';
export type {
  ExecutorEngineFacts,
  ExecutorEvent,
  ExecutorFinishReason,
  ExecutorRequest,
  ExecutorResult,
  ExecutorSequence,
  ExecutorTokenLogprobs,
  ExecutorStats,
  ExecutorStreamOptions,
  IterationStats,
  RequestStats,
} from './executor';
