// Grammar-constrained decoding: a ResponseFormat compiled by xgrammar for one tokenizer, and the
// per-request source of allowed-token masks that the runtime's executor hands to the native sampler
// before each token (docs/decisions/0011-structured-output-with-xgrammar.md).
import type { ResponseFormat } from './response-format';
import { ResponseFormatError } from './response-format';
import { TOOL_CALL_CLOSE, TOOL_CALL_OPEN, toolCallSchema, type ToolDefinition } from './tool-calls';
import { Utf8Masks } from './utf8-masks';
import { loadXgrammar, withXgrammarErrors, type XgCompiledGrammar, type XgGrammarCompiler, type XgGrammarMatcher, type XgTokenizerInfo } from './xgrammar';

/** The token strings of a vocabulary, as xgrammar reads them, and how they encode bytes. */
export interface GrammarVocabulary {
  /** tokens[id]: the token's string in tokenizer.json (byte-level "Ġthe", SentencePiece "▁the", "<0x0A>"); "" for an unused id. */
  tokens: string[];
  /** tokenizer.json's decoder: ByteLevel (GPT-2, Llama 3, Qwen), ByteFallback (Llama 2, Mistral) or raw strings. */
  kind: 'byte_level' | 'byte_fallback' | 'raw';
  /** SentencePiece's dummy prefix ("▁" before the first word). */
  prependSpace: boolean;
}

/** Bounds a tokenizer.json from an untrusted folder: vocabularies beyond 2^22 tokens do not exist. */
const MAX_VOCABULARY = 1 << 22;

/**
 * Reads a GrammarVocabulary from a parsed tokenizer.json (its model.vocab and added_tokens). Throws
 * naming the field when the file does not have the shape of a Hugging Face tokenizer.
 */
export function grammarVocabularyOf(tokenizerJson: Record<string, unknown>, vocabSize: number): GrammarVocabulary {
  if (!Number.isSafeInteger(vocabSize) || vocabSize < 1 || vocabSize > MAX_VOCABULARY) throw new RangeError(`vocabSize ${vocabSize} is outside [1, ${MAX_VOCABULARY}]`);
  const model = tokenizerJson.model as { vocab?: unknown } | undefined;
  const tokens: string[] = new Array<string>(vocabSize).fill('');
  const put = (text: unknown, id: unknown): void => {
    if (typeof text === 'string' && Number.isSafeInteger(id) && (id as number) >= 0 && (id as number) < vocabSize) tokens[id as number] = text;
  };
  const vocab = model?.vocab;
  if (Array.isArray(vocab)) {
    vocab.forEach((entry, id) => put(Array.isArray(entry) ? entry[0] : undefined, id)); // Unigram: [piece, score]
  } else if (typeof vocab === 'object' && vocab !== null) {
    for (const [text, id] of Object.entries(vocab)) put(text, id);
  } else {
    throw new Error('tokenizer.json: model.vocab is missing: cannot build grammars for this tokenizer');
  }
  if (Array.isArray(tokenizerJson.added_tokens)) {
    for (const added of tokenizerJson.added_tokens as Array<{ id?: unknown; content?: unknown }>) put(added?.content, added?.id);
  }
  const decoder = JSON.stringify(tokenizerJson.decoder ?? null);
  const kind = decoder.includes('"ByteLevel"') ? 'byte_level' : decoder.includes('"ByteFallback"') ? 'byte_fallback' : 'raw';
  const prependSpace = decoder.includes('"Metaspace"') && !decoder.includes('"prepend_scheme":"never"');
  return { tokens, kind, prependSpace };
}

/**
 * Allowed-token masks for one request, as the runtime's executor asks for them: one sequence, or the
 * beams of a beam search (whose parents are found among the previous step's beams).
 */
export interface TokenMaskSource {
  /** The mask of the next token of a sequence whose output so far is `generated` ([] for the first). */
  nextMask(generated: readonly number[]): Promise<Uint32Array>;
  /** Beam search: the masks of each running beam, from each beam's output so far. */
  beamMasks(beams: readonly (readonly number[])[]): Promise<Uint32Array[]>;
  /** Frees the grammar state (WebAssembly memory). */
  dispose(): void;
}

/** One compiled ResponseFormat: masks for as many requests as use it. */
export class CompiledFormat {
  readonly #compiled: XgCompiledGrammar;
  readonly #stopTokenIds: number[];
  readonly #utf8: Utf8Masks;
  #disposed = false;

  /** @internal made by GuidedDecoding.compile */
  constructor(compiled: XgCompiledGrammar, stopTokenIds: number[], utf8: Utf8Masks) {
    this.#compiled = compiled;
    this.#stopTokenIds = stopTokenIds;
    this.#utf8 = utf8;
  }

  /** A fresh mask source (one per request). */
  maskSource(): TokenMaskSource {
    if (this.#disposed) throw new Error('this compiled format is disposed');
    return new GrammarMaskSource(this.#compiled, this.#stopTokenIds, this.#utf8);
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#compiled.dispose();
  }
}

/**
 * xgrammar for one tokenizer: its TokenizerInfo (the token trie, 0.5 s at 32k tokens) and a grammar
 * compiler with its cache, made once per model and shared by its requests.
 */
export class GuidedDecoding {
  readonly #info: XgTokenizerInfo;
  readonly #compiler: XgGrammarCompiler;
  readonly #stopTokenIds: number[];
  readonly #utf8: Utf8Masks;
  readonly vocabSize: number;
  #disposed = false;

  private constructor(info: XgTokenizerInfo, compiler: XgGrammarCompiler, stopTokenIds: number[], vocabSize: number, utf8: Utf8Masks) {
    this.#info = info;
    this.#compiler = compiler;
    this.#stopTokenIds = stopTokenIds;
    this.vocabSize = vocabSize;
    this.#utf8 = utf8;
  }

  /**
   * `vocabSize`: the engine's (masks have ceil(vocabSize / 32) words; ids past the tokenizer's are never
   * allowed). `stopTokenIds`: the tokens that end a complete output (the model's end of sequence).
   */
  static async create(vocabulary: GrammarVocabulary, vocabSize: number, stopTokenIds: readonly number[]): Promise<GuidedDecoding> {
    if (stopTokenIds.length === 0) throw new Error('guided decoding needs the model\'s end-of-sequence token to end a complete output');
    const xgrammar = await loadXgrammar();
    const stops = [...stopTokenIds];
    const info = await withXgrammarErrors(() =>
      xgrammar.TokenizerInfo.createTokenizerInfo(vocabulary.tokens, vocabulary.kind, vocabulary.prependSpace, vocabSize, stops),
    );
    const compiler = await xgrammar.GrammarCompiler.createGrammarCompiler(info, true);
    return new GuidedDecoding(info, compiler, stops, vocabSize, Utf8Masks.of(vocabulary, vocabSize, stops));
  }

  /**
   * Compiles a (validated: validateResponseFormat) format; undefined for `text`. A grammar xgrammar
   * refuses throws a ResponseFormatError naming `field` and xgrammar's reason.
   */
  async compile(format: ResponseFormat, field = 'responseFormat'): Promise<CompiledFormat | undefined> {
    if (this.#disposed) throw new Error('guided decoding is disposed');
    const compiler = this.#compiler;
    let what = field;
    let compile: () => Promise<XgCompiledGrammar>;
    switch (format.type) {
      case 'text':
        return undefined;
      case 'json_object':
        // Any object: a schema without strict mode leaves additional properties open.
        compile = async () => compiler.compileGrammar(await jsonSchemaGrammar({ type: 'object' }, false), 'root');
        break;
      case 'json_schema':
        what = `${field}.schema`;
        // Strict mode closes objects to their declared properties unless additionalProperties opens them.
        compile = async () => compiler.compileGrammar(await jsonSchemaGrammar(format.schema, true), 'root');
        break;
      case 'regex':
        what = `${field}.pattern`;
        compile = () =>
          (compiler as unknown as { compileStructuralTag(tag: object): Promise<XgCompiledGrammar> }).compileStructuralTag({
            type: 'structural_tag',
            format: { type: 'regex', pattern: format.pattern },
          });
        break;
      case 'grammar':
        what = `${field}.grammar`;
        compile = () => compiler.compileGrammar(format.grammar, 'root');
        break;
    }
    try {
      return new CompiledFormat(await withXgrammarErrors(compile), this.#stopTokenIds, this.#utf8);
    } catch (error) {
      throw new ResponseFormatError(what, `cannot be compiled into a grammar: ${(error as Error).message}`);
    }
  }

  /**
   * The grammar of one tool call among `tools` (validated: validateTools): the tags of tool-calls.ts
   * around {"name", "arguments"}, the arguments valid against that function's parameters.
   */
  async compileToolCall(tools: ToolDefinition[], field = 'tools'): Promise<CompiledFormat> {
    if (this.#disposed) throw new Error('guided decoding is disposed');
    const compiler = this.#compiler;
    try {
      const compiled = await withXgrammarErrors(async () => {
        const json = (await jsonSchemaGrammar(toolCallSchema(tools), true)).replace(/\broot\b/g, 'tool_call_json');
        const tag = (text: string) => JSON.stringify(text);
        return compiler.compileGrammar(`${json}\nroot ::= ${tag(`${TOOL_CALL_OPEN}\n`)} tool_call_json ${tag(`\n${TOOL_CALL_CLOSE}`)}\n`, 'root');
      });
      return new CompiledFormat(compiled, this.#stopTokenIds, this.#utf8);
    } catch (error) {
      throw new ResponseFormatError(field, `cannot be compiled into a grammar: ${(error as Error).message}`);
    }
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#compiler.dispose();
    this.#info.dispose();
  }
}

/**
 * xgrammar's EBNF for a JSON schema, with its rules corrected where they admit invalid values
 * (xgrammar 0.1.27's json_schema_converter.cc; the structured-output suite found each with ajv):
 * - length-bounded strings allow raw control characters (`"\"" [^"\\\r\n]{min,max} "\""`),
 *   which makes invalid JSON: they become the rules of boundedStringRules, with the character class
 *   of its unbounded strings;
 * - integer ranges whose bound has a middle digit are too wide (`maximum: 120` gives 100 to 129):
 *   bounded integers are written by integerRangeRule instead (placed through a `const` marker);
 * - dates allow day 31 in every month and Feb 29 in every year: calendarDateRule instead;
 * - times allow second 60 at any time (ajv takes a leap second only at 23:59 UTC), and date-time
 *   minute 60: no leap seconds.
 * Indentation as xgrammar's default: no free whitespace, which a sampled model could otherwise emit forever.
 */
async function jsonSchemaGrammar(schema: unknown, strict: boolean): Promise<string> {
  const xgrammar = await loadXgrammar();
  const rules = new Map<string, string>();
  const integers = new Map<string, string>();
  const marked = markBoundedIntegers(schema, integers);
  // Called inside GuidedDecoding.compile's withXgrammarErrors, which reports its failures.
  const ebnf = await xgrammar.Testings._jsonSchemaToEBNF(JSON.stringify(marked), false, undefined, undefined, strict);
  let corrected = ebnf
    .replace(/"\\"" \[\^"\\\\\\r\\n\]\{(\d+),(\d*)\} "\\""/g, (_, min: string, max: string) =>
      `"\\"" ${boundedStringRules(Number(min), max === '' ? undefined : Number(max), rules)}`,
    )
    .split(XGRAMMAR_DATE)
    .join(CALENDAR_DATE_RULE)
    .split('":" ( [0-5] [0-9] | "6" "0" ) ":" [0-5] [0-9]')
    .join('":" [0-5] [0-9] ":" [0-5] [0-9]')
    .split('":" [0-5] [0-9] ":" ( [0-5] [0-9] | "6" "0" )')
    .join('":" [0-5] [0-9] ":" [0-5] [0-9]');
  for (const [name, body] of integers) {
    corrected = corrected.split(`"\\"${name}\\""`).join(name);
    rules.set(name, `${name} ::= ${body}`);
  }
  if (/\[\^"\\\\\\r\\n\]\{/.test(corrected)) {
    // A bounded string in a shape this correction does not know: refused rather than left invalid.
    throw new Error('a length-bounded string in an unexpected form (xgrammar\'s output changed?)');
  }
  if (corrected.includes(CALENDAR_DATE_RULE)) {
    corrected = corrected.split(CALENDAR_DATE_RULE).join('kiln_calendar_date');
    rules.set('kiln_calendar_date', CALENDAR_DATE_RULES);
  }
  return rules.size === 0 ? corrected : `${corrected}\n${[...rules.values()].join('\n')}\n`;
}

/** xgrammar 0.1.27's date (format date, and date-time's date). */
const XGRAMMAR_DATE = '( [0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [1-2] [0-9] | "3" [01] ) )';
// A placeholder for the rule's name while xgrammar's text is corrected (not an EBNF name: cannot clash).
const CALENDAR_DATE_RULE = '<kiln calendar date>';
/** YYYY-MM-DD with each month's days, Feb 29 in leap years only (as ajv-formats checks them). */
const CALENDAR_DATE_RULES =
  'kiln_calendar_date ::= [0-9]{4} "-" ( ( "0" [13578] | "1" [02] ) "-" ( "0" [1-9] | [12] [0-9] | "3" [01] ) | ( "0" [469] | "11" ) "-" ( "0" [1-9] | [12] [0-9] | "30" ) | "02" "-" ( "0" [1-9] | "1" [0-9] | "2" [0-8] ) )' +
  ' | ( [0-9] [0-9] ( "0" [48] | [2468] [048] | [13579] [26] ) | ( "0" [048] | [2468] [048] | [13579] [26] ) "00" ) "-02-29"';

/**
 * A copy of `schema` in which each integer schema with both bounds (`type: "integer"`, minimum or
 * exclusiveMinimum, maximum or exclusiveMaximum) is a `const` marker string; `integers` gets each
 * marker's rule name and its EBNF (integerRangeRule). Values (enum, const, default, examples) are
 * left as they are.
 */
function markBoundedIntegers(schema: unknown, integers: Map<string, string>): unknown {
  const nonce = Math.random().toString(36).slice(2, 10);
  const visit = (node: unknown): unknown => {
    if (Array.isArray(node)) return node.map(visit);
    if (typeof node !== 'object' || node === null) return node;
    const object = node as Record<string, unknown>;
    if (object.type === 'integer') {
      const bound = (inclusive: unknown, exclusive: unknown, lower: boolean): number | undefined => {
        const values: number[] = [];
        if (typeof inclusive === 'number') values.push(lower ? Math.ceil(inclusive) : Math.floor(inclusive));
        if (typeof exclusive === 'number') values.push(lower ? Math.floor(exclusive) + 1 : Math.ceil(exclusive) - 1);
        if (values.length === 0) return undefined;
        return lower ? Math.max(...values) : Math.min(...values);
      };
      const min = bound(object.minimum, object.exclusiveMinimum, true);
      const max = bound(object.maximum, object.exclusiveMaximum, false);
      const rest = Object.keys(object).filter((key) => !['type', 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'title', 'description'].includes(key));
      if (min !== undefined && max !== undefined && min <= max && Number.isSafeInteger(min) && Number.isSafeInteger(max) && rest.length === 0) {
        const name = `kiln_integer_${nonce}_${integers.size}`;
        integers.set(name, integerRangeRule(min, max));
        return { const: name };
      }
    }
    const copy: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(object)) copy[key] = ['enum', 'const', 'default', 'examples'].includes(key) ? value : visit(value);
    return copy;
  };
  return visit(schema);
}

/** EBNF alternatives for the decimal integers lo to hi as JSON writes them (no leading zero, no -0). */
export function integerRangeRule(lo: number, hi: number): string {
  const alternatives: string[] = [];
  if (lo < 0) {
    const negatives = digitRanges(Math.max(1, hi < 0 ? -hi : 1), -lo);
    alternatives.push(...negatives.map((pattern) => `"-" ${pattern}`));
  }
  if (hi >= 0) alternatives.push(...digitRanges(Math.max(0, lo), hi));
  return alternatives.length === 1 ? alternatives[0] : `( ${alternatives.join(' | ')} )`;
}

/** Digit patterns (EBNF sequences) for a to b, 0 <= a <= b, grouped by number of digits. */
function digitRanges(a: number, b: number): string[] {
  const patterns: string[] = [];
  for (let digits = String(a).length; digits <= String(b).length; digits++) {
    const low = Math.max(a, digits === 1 ? 0 : 10 ** (digits - 1));
    const high = Math.min(b, 10 ** digits - 1);
    if (low <= high) patterns.push(...sameLength(String(low), String(high)));
  }
  return patterns;
}

/** Patterns for the numbers between two digit strings of the same length. */
function sameLength(x: string, y: string): string[] {
  if (x === y) return [x.split('').map((d) => `"${d}"`).join(' ')];
  if (x.length === 1) return [`[${x}-${y}]`];
  const [dx, restX] = [Number(x[0]), x.slice(1)];
  const [dy, restY] = [Number(y[0]), y.slice(1)];
  if (dx === dy) return sameLength(restX, restY).map((pattern) => `"${dx}" ${pattern}`);
  const any = (n: number): string[] => Array<string>(n).fill('[0-9]');
  const patterns: string[] = [];
  let from = dx;
  if (!/^0*$/.test(restX)) {
    patterns.push(...sameLength(restX, '9'.repeat(restX.length)).map((pattern) => `"${dx}" ${pattern}`));
    from = dx + 1;
  }
  let to = dy;
  const upper: string[] = [];
  if (!/^9*$/.test(restY)) {
    upper.push(...sameLength('0'.repeat(restY.length), restY).map((pattern) => `"${dy}" ${pattern}`));
    to = dy - 1;
  }
  if (from <= to) patterns.push([from === to ? `"${from}"` : `[${from}-${to}]`, ...any(restX.length)].join(' '));
  return [...patterns, ...upper];
}

/** A JSON string character: no control character, quote or backslash (a multi-byte character is one). */
const STRING_CHARACTER = '[^\\0-\\x1f"\\\\]';

/**
 * The rest of a string after its opening quote: `min` to `max` characters (no bound: undefined), then
 * the closing quote, as right-recursive rules that end with the quote (added to `rules`; the name of
 * the first is returned). In this shape a token that goes past the bound or the quote is decided when
 * the grammar is compiled, inside the rule: xgrammar's `{min,max}` repetition (and nested optionals)
 * let every token longer than the characters left be checked again at every step, and masks in
 * strings cost 2 ms per token at 32k tokens instead of 0.03 (docs/decisions/0011).
 */
function boundedStringRules(min: number, max: number | undefined, rules: Map<string, string>): string {
  const add = (name: string, body: string): string => {
    if (!rules.has(name)) rules.set(name, `${name} ::= ${body}`);
    return name;
  };
  let rest: string;
  if (max === undefined) {
    rest = add('kiln_string_rest', `"\\"" | ${STRING_CHARACTER} kiln_string_rest`);
  } else {
    rest = add('kiln_string_rest_0', '"\\""');
    for (let n = 1; n <= max - min; n++) rest = add(`kiln_string_rest_${n}`, `"\\"" | ${STRING_CHARACTER} kiln_string_rest_${n - 1}`);
  }
  const tail = rest;
  for (let k = 1; k <= min; k++) rest = add(`kiln_string_${k}_then_${tail}`, `${STRING_CHARACTER} ${rest}`);
  return rest;
}

function toUint32(mask: Int32Array): Uint32Array {
  return new Uint32Array(mask.buffer, mask.byteOffset, mask.length);
}

/** Whether `tokens` begins with `prefix`. */
function continues(tokens: readonly number[], prefix: readonly number[]): boolean {
  if (tokens.length < prefix.length) return false;
  for (let i = prefix.length - 1; i >= 0; i--) if (tokens[i] !== prefix[i]) return false;
  return true;
}

/** One running sequence: its matcher, the tokens it has accepted, and the UTF-8 state they leave. */
interface Sequence {
  matcher: XgGrammarMatcher;
  accepted: number;
  utf8: number;
}

/** Matchers for one request: one per running sequence, each knowing the output it has accepted. */
class GrammarMaskSource implements TokenMaskSource {
  readonly #compiled: XgCompiledGrammar;
  readonly #stopTokenIds: number[];
  readonly #utf8: Utf8Masks;
  // One sequence (nextMask): its matcher follows the output as it grows.
  #single: Sequence | undefined;
  #singleTokens: number[] = [];
  // Beam search: key, the accepted tokens joined by ","; the set is replaced each step.
  #beams = new Map<string, Sequence>();
  #disposed = false;

  constructor(compiled: XgCompiledGrammar, stopTokenIds: number[], utf8: Utf8Masks) {
    this.#compiled = compiled;
    this.#stopTokenIds = stopTokenIds;
    this.#utf8 = utf8;
  }

  async nextMask(generated: readonly number[]): Promise<Uint32Array> {
    if (this.#disposed) throw new Error('this token mask source is disposed');
    let sequence = this.#single;
    if (sequence === undefined || !continues(generated, this.#singleTokens)) {
      // The first mask, or an output that is not a continuation of the one followed: start again.
      sequence?.matcher.dispose();
      this.#single = undefined;
      this.#singleTokens = [];
      sequence = { matcher: await this.#xgrammarMatcher(), accepted: 0, utf8: 0 };
    }
    this.#single = sequence;
    for (let i = this.#singleTokens.length; i < generated.length; i++) this.#singleTokens.push(generated[i]);
    try {
      return await this.#advance(sequence, generated);
    } catch (error) {
      sequence.matcher.dispose();
      this.#single = undefined;
      throw error;
    }
  }

  async beamMasks(beams: readonly (readonly number[])[]): Promise<Uint32Array[]> {
    if (this.#disposed) throw new Error('this token mask source is disposed');
    const previous = this.#beams;
    const next = new Map<string, Sequence>();
    const masks: Uint32Array[] = [];
    try {
      for (const tokens of beams) {
        // The usual case: the sequence is a known one plus its new token. A beam forked from a parent
        // another beam already took replays its tokens on a fresh matcher.
        const parentKey = tokens.slice(0, -1).join(',');
        let sequence = tokens.length > 0 ? previous.get(parentKey) : undefined;
        if (sequence) previous.delete(parentKey);
        else sequence = { matcher: await this.#xgrammarMatcher(), accepted: 0, utf8: 0 };
        next.set(tokens.join(','), sequence);
        masks.push(await this.#advance(sequence, tokens));
      }
    } catch (error) {
      for (const sequence of next.values()) sequence.matcher.dispose();
      this.#beams = new Map();
      throw error;
    } finally {
      for (const sequence of previous.values()) sequence.matcher.dispose();
    }
    this.#beams = next;
    return masks;
  }

  /** Accepts the tokens of `tokens` that `sequence` has not seen, then gives its next mask. */
  async #advance(sequence: Sequence, tokens: readonly number[]): Promise<Uint32Array> {
    for (let i = sequence.accepted; i < tokens.length; i++) {
      const utf8 = this.#utf8.next(sequence.utf8, tokens[i]);
      if (utf8 < 0 || !sequence.matcher.acceptToken(tokens[i])) {
        throw new Error(`the grammar refused token ${tokens[i]} at output position ${i}, which its own mask allowed`);
      }
      sequence.utf8 = utf8;
      sequence.accepted = i + 1;
    }
    const mask = toUint32(await sequence.matcher.getNextTokenBitmask());
    this.#utf8.restrict(mask, sequence.utf8);
    return mask;
  }

  async #xgrammarMatcher(): Promise<XgGrammarMatcher> {
    const xgrammar = await loadXgrammar();
    return xgrammar.GrammarMatcher.createGrammarMatcher(this.#compiled, this.#stopTokenIds);
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#single?.matcher.dispose();
    this.#single = undefined;
    for (const sequence of this.#beams.values()) sequence.matcher.dispose();
    this.#beams.clear();
  }
}
