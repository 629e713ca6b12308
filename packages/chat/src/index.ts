export { ChatTemplate, ChatTemplateError, loadChatTemplate, loadChatTemplateFile } from './chat-template';
export type { ChatMessage } from './chat-template';
export { CompiledFormat, grammarVocabularyOf, GuidedDecoding } from './guided-decoding';
export type { GrammarVocabulary, TokenMaskSource } from './guided-decoding';
export {
  MAX_GRAMMAR_BYTES,
  MAX_SCHEMA_BYTES,
  MAX_SCHEMA_DEPTH,
  ResponseFormatError,
  SUPPORTED_SCHEMA_KEYWORDS,
  SUPPORTED_STRING_FORMATS,
  validateResponseFormat,
} from './response-format';
export type { ResponseFormat } from './response-format';
export { compactJson, MAX_TOOLS, parseToolCalls, readPartialCall, TOOL_CALL_CLOSE, TOOL_CALL_OPEN, toolCallSchema, validateToolChoice, validateTools } from './tool-calls';
export type { ToolCall, ToolChoice, ToolDefinition } from './tool-calls';
