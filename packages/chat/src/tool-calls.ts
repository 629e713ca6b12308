// Tool (function) calling: OpenAI's `tools` and `tool_choice` checked, and the model's calls found in
// its output. A call is written the way Hermes- and Qwen-style chat templates teach models to:
//   <tool_call>
//   {"name": "get_weather", "arguments": {"city": "Paris"}}
//   </tool_call>
// When a call is required (tool_choice "required" or a named function), a grammar forces exactly that
// shape, the arguments valid against the function's parameters (GuidedDecoding.compileToolCall).
import { ResponseFormatError, validateResponseFormat } from './response-format';

export interface ToolDefinition {
  type: 'function';
  function: { name: string; description?: string; parameters: Record<string, unknown> | boolean; strict?: boolean };
}

/** `none`: no call; `auto`: the model decides; `required`: one call; a name: one call of that function. */
export type ToolChoice = 'none' | 'auto' | 'required' | { type: 'function'; function: { name: string } };

export interface ToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

export const MAX_TOOLS = 128;
export const TOOL_CALL_OPEN = '<tool_call>';
export const TOOL_CALL_CLOSE = '</tool_call>';

/** Checks OpenAI's `tools`; throws ResponseFormatError naming the path (tools[1].function.parameters.x). */
export function validateTools(value: unknown, field = 'tools'): ToolDefinition[] {
  if (!Array.isArray(value) || value.length === 0) throw new ResponseFormatError(field, 'must be a non-empty array of {"type": "function", "function": {...}}');
  if (value.length > MAX_TOOLS) throw new ResponseFormatError(field, `holds more than ${MAX_TOOLS} tools`);
  const names = new Set<string>();
  return value.map((tool, index) => {
    const at = `${field}[${index}]`;
    if (typeof tool !== 'object' || tool === null || (tool as { type?: unknown }).type !== 'function') throw new ResponseFormatError(`${at}.type`, 'must be "function"');
    const fn = (tool as { function?: unknown }).function as Record<string, unknown> | undefined;
    if (typeof fn !== 'object' || fn === null) throw new ResponseFormatError(`${at}.function`, 'must be an object with a name');
    for (const key of Object.keys(fn)) {
      if (!['name', 'description', 'parameters', 'strict'].includes(key)) throw new ResponseFormatError(`${at}.function.${key}`, 'is not a field of a function');
    }
    const name = fn.name;
    if (typeof name !== 'string' || !/^[a-zA-Z0-9_-]{1,64}$/.test(name)) throw new ResponseFormatError(`${at}.function.name`, 'must be 1 to 64 letters, digits, _ or -');
    if (names.has(name)) throw new ResponseFormatError(`${at}.function.name`, `repeats the name ${name}`);
    names.add(name);
    if (fn.description !== undefined && typeof fn.description !== 'string') throw new ResponseFormatError(`${at}.function.description`, 'must be a string');
    // No parameters: an object with none (OpenAI's reading).
    const parameters = fn.parameters ?? { type: 'object', properties: {} };
    const where = `${at}.function.parameters`;
    try {
      validateResponseFormat({ type: 'json_schema', schema: parameters }, where);
    } catch (error) {
      // validateResponseFormat calls the schema `<field>.schema`; here the parameters are the schema.
      if (!(error instanceof ResponseFormatError)) throw error;
      throw new ResponseFormatError(error.path.replace(`${where}.schema`, where), error.message.slice(error.path.length + 2));
    }
    return { type: 'function', function: { name, description: fn.description as string | undefined, parameters: parameters as Record<string, unknown>, strict: fn.strict as boolean | undefined } };
  });
}

/** Checks `tool_choice` against the tools; default `auto` with tools, `none` without. */
export function validateToolChoice(value: unknown, tools: ToolDefinition[] | undefined, field = 'tool_choice'): ToolChoice {
  if (value === undefined || value === null) return tools ? 'auto' : 'none';
  if (value === 'none' || value === 'auto' || value === 'required') {
    if (value !== 'none' && !tools) throw new ResponseFormatError(field, `${value} needs tools`);
    return value;
  }
  const named = value as { type?: unknown; function?: { name?: unknown } };
  if (typeof value === 'object' && named.type === 'function' && typeof named.function?.name === 'string') {
    const name = named.function.name;
    if (!tools?.some((tool) => tool.function.name === name)) throw new ResponseFormatError(`${field}.function.name`, `names no tool: ${name}`);
    return { type: 'function', function: { name } };
  }
  throw new ResponseFormatError(field, 'must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}');
}

/** The JSON schema of one call among `tools`: {"name": <one of them>, "arguments": <its parameters>}. */
export function toolCallSchema(tools: ToolDefinition[]): Record<string, unknown> {
  const calls = tools.map((tool) => ({
    type: 'object',
    properties: { name: { const: tool.function.name }, arguments: tool.function.parameters },
    required: ['name', 'arguments'],
    additionalProperties: false,
  }));
  return calls.length === 1 ? calls[0] : { anyOf: calls };
}

/**
 * The tool calls in a model's output, and the text outside them. Blocks that do not hold a JSON object
 * with a string `name` and an object `arguments` stay text (a model may write the tags by accident).
 */
export function parseToolCalls(text: string, makeId: () => string): { content: string; calls: ToolCall[] } {
  const calls: ToolCall[] = [];
  let content = '';
  let at = 0;
  for (;;) {
    const open = text.indexOf(TOOL_CALL_OPEN, at);
    const close = open < 0 ? -1 : text.indexOf(TOOL_CALL_CLOSE, open + TOOL_CALL_OPEN.length);
    if (open < 0 || close < 0) {
      content += text.slice(at);
      break;
    }
    const body = text.slice(open + TOOL_CALL_OPEN.length, close);
    let call: { name?: unknown; arguments?: unknown } | undefined;
    try {
      call = JSON.parse(body) as { name?: unknown; arguments?: unknown };
    } catch {
      call = undefined;
    }
    if (call && typeof call.name === 'string' && typeof call.arguments === 'object' && call.arguments !== null && !Array.isArray(call.arguments)) {
      content += text.slice(at, open);
      // The model's own JSON for the arguments, without the whitespace between tokens (as a streamed
      // call's argument deltas add up to: ToolCallStream).
      const partial = readPartialCall(body);
      const args = partial.argumentsComplete ? compactJson(partial.arguments) : JSON.stringify(call.arguments);
      calls.push({ id: makeId(), type: 'function', function: { name: call.name, arguments: args } });
    } else {
      content += text.slice(at, close + TOOL_CALL_CLOSE.length);
    }
    at = close + TOOL_CALL_CLOSE.length;
  }
  return { content: content.trim(), calls };
}

/** JSON text without the whitespace between its tokens (strings kept as written). */
export function compactJson(text: string): string {
  let out = '';
  let inString = false;
  let escaped = false;
  for (const character of text) {
    if (inString) {
      out += character;
      if (escaped) escaped = false;
      else if (character === '\\') escaped = true;
      else if (character === '"') inString = false;
    } else if (character === '"') {
      inString = true;
      out += character;
    } else if (character !== ' ' && character !== '\n' && character !== '\r' && character !== '\t') {
      out += character;
    }
  }
  return out;
}

/**
 * What a tool call's JSON body ({"name": ..., "arguments": {...}}, possibly cut short) says so far: the
 * name once its string is complete, and the raw text of the arguments value from its start (complete
 * once its object closes).
 */
export function readPartialCall(body: string): { name?: string; arguments: string; argumentsComplete: boolean } {
  let depth = 0;
  let inString = false;
  let escaped = false;
  let stringStart = -1;
  let key: string | undefined;
  let expectKey = false;
  let valueKey: string | undefined;
  let name: string | undefined;
  let argumentsStart = -1;
  let argumentsEnd = -1;
  for (let i = 0; i < body.length; i++) {
    const character = body[i];
    if (inString) {
      if (escaped) escaped = false;
      else if (character === '\\') escaped = true;
      else if (character === '"') {
        inString = false;
        if (depth === 1) {
          let value: string | undefined;
          try {
            value = JSON.parse(body.slice(stringStart, i + 1)) as string;
          } catch {
            value = undefined;
          }
          if (expectKey) key = value;
          else if (valueKey === 'name' && name === undefined) name = value;
        }
      }
      continue;
    }
    if (character === '"') {
      inString = true;
      stringStart = i;
      continue;
    }
    if (character === '{' || character === '[') {
      depth++;
      if (depth === 1) expectKey = true;
      continue;
    }
    if (character === '}' || character === ']') {
      depth--;
      if (depth === 1 && valueKey === 'arguments' && argumentsEnd < 0) argumentsEnd = i + 1;
      continue;
    }
    if (depth === 1 && character === ':') {
      expectKey = false;
      valueKey = key;
      if (key === 'arguments' && argumentsStart < 0) {
        argumentsStart = i + 1;
        while (argumentsStart < body.length && ' \n\r\t'.includes(body[argumentsStart])) argumentsStart++;
      }
    } else if (depth === 1 && character === ',') {
      expectKey = true;
      valueKey = undefined;
    }
  }
  if (argumentsStart < 0) return { name, arguments: '', argumentsComplete: false };
  return { name, arguments: body.slice(argumentsStart, argumentsEnd < 0 ? undefined : argumentsEnd), argumentsComplete: argumentsEnd >= 0 };
}
