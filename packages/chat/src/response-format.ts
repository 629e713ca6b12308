// The shapes of structured output a request may ask for, and their checks. Every input is untrusted: a
// schema is bounded in size and depth, and every JSON Schema keyword the grammar cannot enforce is
// refused by its path rather than silently ignored (xgrammar itself drops what it does not know, e.g.
// `uniqueItems`, `multipleOf`, `not`, unknown `format`s).

/**
 * What the output must be. Default (`text` or no responseFormat): unconstrained.
 * - `json_object`: any JSON object (OpenAI's JSON mode);
 * - `json_schema`: JSON valid against `schema` (the keywords of SUPPORTED_SCHEMA_KEYWORDS); `strict`
 *   (OpenAI's flag) changes nothing: the schema is always enforced;
 * - `regex`: text matching `pattern` (ECMAScript-like syntax, xgrammar's regex dialect);
 * - `grammar`: text of an EBNF grammar (xgrammar's / llama.cpp's GBNF dialect) whose start rule is `root`.
 */
export type ResponseFormat =
  | { type: 'text' }
  | { type: 'json_object' }
  | { type: 'json_schema'; schema: Record<string, unknown> | boolean; strict?: boolean }
  | { type: 'regex'; pattern: string }
  | { type: 'grammar'; grammar: string };

/** A bad responseFormat: `path` names the field at fault (e.g. `responseFormat.schema.properties.age.multipleOf`). */
export class ResponseFormatError extends Error {
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(`${path}: ${message}`);
    this.name = 'ResponseFormatError';
  }
}

/** Bounds on an untrusted schema or grammar: its serialized size and nesting depth. */
export const MAX_SCHEMA_BYTES = 256 * 1024;
export const MAX_SCHEMA_DEPTH = 64;
export const MAX_GRAMMAR_BYTES = 64 * 1024;
export const MAX_STRING_LENGTH_BOUND = 4096;

/** The keywords xgrammar turns into grammar rules (json_schema_converter.cc), or that only annotate. */
export const SUPPORTED_SCHEMA_KEYWORDS: ReadonlySet<string> = new Set([
  'type', 'properties', 'required', 'additionalProperties', 'items', 'prefixItems', 'minItems', 'maxItems',
  'enum', 'const', 'anyOf', 'allOf', '$ref', '$defs', 'definitions', 'minimum', 'maximum', 'exclusiveMinimum',
  'exclusiveMaximum', 'minLength', 'maxLength', 'pattern', 'format', 'patternProperties',
  // annotations: no effect on what is valid
  'title', 'description', 'default', 'examples', '$schema', '$id', '$comment',
]);

/**
 * The string formats whose xgrammar grammars the structured-output suite verified against ajv-formats.
 * Others are refused rather than trusted: xgrammar's ipv4 accepts leading zeros ("45.071.0.1") that
 * the format forbids, and it silently treats unknown formats as any string.
 */
export const SUPPORTED_STRING_FORMATS: ReadonlySet<string> = new Set(['date', 'time', 'date-time', 'uuid']);

const SCHEMA_TYPES = new Set(['object', 'array', 'string', 'number', 'integer', 'boolean', 'null']);

/** Checks a responseFormat value (from a program or a request body); throws ResponseFormatError. */
export function validateResponseFormat(value: unknown, field = 'responseFormat'): ResponseFormat {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ResponseFormatError(field, 'must be an object with a `type`');
  const format = value as Record<string, unknown>;
  const allowedKeys: Record<string, string[]> = {
    text: ['type'],
    json_object: ['type'],
    json_schema: ['type', 'schema', 'strict'],
    regex: ['type', 'pattern'],
    grammar: ['type', 'grammar'],
  };
  const type = format.type;
  if (typeof type !== 'string' || !(type in allowedKeys)) {
    throw new ResponseFormatError(`${field}.type`, `must be one of ${Object.keys(allowedKeys).join(', ')}`);
  }
  for (const key of Object.keys(format)) {
    if (!allowedKeys[type].includes(key)) throw new ResponseFormatError(`${field}.${key}`, `is not a field of a ${type} responseFormat`);
  }
  switch (type) {
    case 'text':
    case 'json_object':
      return { type };
    case 'json_schema': {
      if (format.strict !== undefined && typeof format.strict !== 'boolean') throw new ResponseFormatError(`${field}.strict`, 'must be a boolean');
      const schema = format.schema;
      if (typeof schema !== 'boolean' && (typeof schema !== 'object' || schema === null || Array.isArray(schema))) {
        throw new ResponseFormatError(`${field}.schema`, 'must be a JSON Schema object');
      }
      const size = Buffer.byteLength(JSON.stringify(schema));
      if (size > MAX_SCHEMA_BYTES) throw new ResponseFormatError(`${field}.schema`, `is ${size} bytes of JSON, more than the ${MAX_SCHEMA_BYTES} allowed`);
      checkSchema(schema, `${field}.schema`, schema, 0);
      return { type, schema: schema as Record<string, unknown> | boolean, strict: format.strict as boolean | undefined };
    }
    case 'regex':
      if (typeof format.pattern !== 'string' || format.pattern.length === 0) throw new ResponseFormatError(`${field}.pattern`, 'must be a non-empty string');
      if (Buffer.byteLength(format.pattern) > MAX_GRAMMAR_BYTES) throw new ResponseFormatError(`${field}.pattern`, `is longer than ${MAX_GRAMMAR_BYTES} bytes`);
      return { type, pattern: format.pattern };
    default:
      if (typeof format.grammar !== 'string' || format.grammar.length === 0) throw new ResponseFormatError(`${field}.grammar`, 'must be a non-empty string');
      if (Buffer.byteLength(format.grammar) > MAX_GRAMMAR_BYTES) throw new ResponseFormatError(`${field}.grammar`, `is longer than ${MAX_GRAMMAR_BYTES} bytes`);
      return { type: 'grammar', grammar: format.grammar };
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Walks a schema: every keyword supported, every value of the right kind, every $ref resolvable. */
function checkSchema(schema: unknown, at: string, root: unknown, depth: number): void {
  if (depth > MAX_SCHEMA_DEPTH) throw new ResponseFormatError(at, `nests deeper than ${MAX_SCHEMA_DEPTH} levels`);
  if (typeof schema === 'boolean') return;
  if (!isObject(schema)) throw new ResponseFormatError(at, 'must be a schema (an object or a boolean)');
  for (const [key, value] of Object.entries(schema)) {
    const here = `${at}.${key}`;
    if (!SUPPORTED_SCHEMA_KEYWORDS.has(key)) {
      throw new ResponseFormatError(here, 'is not supported: structured output cannot enforce this JSON Schema keyword');
    }
    switch (key) {
      case 'type': {
        const types = Array.isArray(value) ? value : [value];
        if (types.length === 0 || !types.every((t) => typeof t === 'string' && SCHEMA_TYPES.has(t))) {
          throw new ResponseFormatError(here, `must be one of ${[...SCHEMA_TYPES].join(', ')}, or an array of them`);
        }
        break;
      }
      case 'properties':
      case 'patternProperties':
      case '$defs':
      case 'definitions':
        if (!isObject(value)) throw new ResponseFormatError(here, 'must be an object of schemas');
        for (const [name, sub] of Object.entries(value)) checkSchema(sub, `${here}.${name}`, root, depth + 1);
        if (key === 'patternProperties') for (const pattern of Object.keys(value)) checkPattern(pattern, here);
        break;
      case 'additionalProperties':
      case 'items':
        checkSchema(value, here, root, depth + 1);
        break;
      case 'prefixItems':
      case 'anyOf':
      case 'allOf':
        if (!Array.isArray(value) || value.length === 0) throw new ResponseFormatError(here, 'must be a non-empty array of schemas');
        value.forEach((sub, index) => checkSchema(sub, `${here}[${index}]`, root, depth + 1));
        if (key === 'allOf' && value.length > 1) throw new ResponseFormatError(here, 'is supported with one schema only (the grammar cannot intersect several)');
        break;
      case 'required':
        if (!Array.isArray(value) || !value.every((name) => typeof name === 'string')) throw new ResponseFormatError(here, 'must be an array of property names');
        break;
      case 'enum':
        if (!Array.isArray(value) || value.length === 0) throw new ResponseFormatError(here, 'must be a non-empty array');
        break;
      case 'minItems':
      case 'maxItems':
      case 'minLength':
      case 'maxLength':
        if (!Number.isSafeInteger(value) || (value as number) < 0) throw new ResponseFormatError(here, 'must be a non-negative integer');
        // Length bounds become grammar rules of that many characters (guided-decoding.ts: boundedStringRules).
        if ((key === 'minLength' || key === 'maxLength') && (value as number) > MAX_STRING_LENGTH_BOUND) {
          throw new ResponseFormatError(here, `must be at most ${MAX_STRING_LENGTH_BOUND}`);
        }
        break;
      case 'minimum':
      case 'maximum':
      case 'exclusiveMinimum':
      case 'exclusiveMaximum':
        if (typeof value !== 'number' || !Number.isFinite(value)) throw new ResponseFormatError(here, 'must be a finite number');
        break;
      case 'pattern':
        if (typeof value !== 'string') throw new ResponseFormatError(here, 'must be a string');
        checkPattern(value, here);
        break;
      case 'format':
        if (typeof value !== 'string' || !SUPPORTED_STRING_FORMATS.has(value)) {
          throw new ResponseFormatError(here, `must be one of ${[...SUPPORTED_STRING_FORMATS].join(', ')}`);
        }
        break;
      case '$ref':
        if (typeof value !== 'string') throw new ResponseFormatError(here, 'must be a string');
        resolveRef(value, here, root);
        break;
      default:
        break;  // annotations
    }
  }
  // xgrammar's number grammar does not keep fractional numbers inside a range (it produced 3.5 for
  // maximum 3): ranges are enforced for integers only, and refused elsewhere rather than ignored.
  const types = schema.type === undefined ? undefined : Array.isArray(schema.type) ? schema.type : [schema.type];
  for (const bound of ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum']) {
    if (schema[bound] !== undefined && !(types && types.length === 1 && types[0] === 'integer')) {
      throw new ResponseFormatError(`${at}.${bound}`, 'is supported on "type": "integer" only');
    }
  }
  // A format's grammar is the whole string's: xgrammar drops length bounds and patterns beside it.
  if (schema.format !== undefined) {
    for (const other of ['minLength', 'maxLength', 'pattern']) {
      if (schema[other] !== undefined) throw new ResponseFormatError(`${at}.${other}`, 'cannot be combined with format');
    }
  }
  if (Number.isSafeInteger(schema.minItems) && Number.isSafeInteger(schema.maxItems) && (schema.minItems as number) > (schema.maxItems as number)) {
    throw new ResponseFormatError(`${at}.minItems`, 'is larger than maxItems: no array is valid');
  }
  if (Number.isSafeInteger(schema.minLength) && Number.isSafeInteger(schema.maxLength) && (schema.minLength as number) > (schema.maxLength as number)) {
    throw new ResponseFormatError(`${at}.minLength`, 'is larger than maxLength: no string is valid');
  }
}

function checkPattern(pattern: string, at: string): void {
  try {
    new RegExp(pattern, 'u');
  } catch (error) {
    throw new ResponseFormatError(at, `is not a valid regular expression: ${(error as Error).message}`);
  }
}

/** Only local references ("#/..."): a schema never makes the server fetch anything. */
function resolveRef(ref: string, at: string, root: unknown): void {
  if (ref === '#') return;
  if (!ref.startsWith('#/')) throw new ResponseFormatError(at, 'must be a local reference ("#/$defs/name"): remote schemas are not fetched');
  let node: unknown = root;
  for (const raw of ref.slice(2).split('/')) {
    const part = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (!isObject(node) || !(part in node)) throw new ResponseFormatError(at, `points at nothing: ${ref}`);
    node = node[part];
  }
}
