// Stop sequences, matched the way OpenAI's `stop` behaves: on decoded text, across token boundaries,
// the output ending just before the stop text unless includeStopText. Mirrors vLLM's StopChecker
// (check_stop_strings), which holds back text that could still become a stop string.

/** What a step of the stop matcher lets the caller emit. */
export interface StopTextStep {
  /** Text that is safe to stream now. */
  text: string;
  /** The stop string that ended generation, if one matched. */
  stop?: string;
}

/**
 * Matches stop strings on a stream of decoded text. `push` each token's text; it returns what can be
 * emitted, holding back any suffix that is the start of a stop string until it is decided.
 */
export class StopTextMatcher {
  private pending = '';
  private stopped = false;

  constructor(
    private readonly stops: readonly string[],
    private readonly includeStopText = false,
  ) {}

  push(chunk: string): StopTextStep {
    if (this.stopped) return { text: '' };
    const text = this.pending + chunk;
    // The earliest stop string in the text (the longest one among those starting at the same place).
    let at = -1;
    let stop: string | undefined;
    for (const s of this.stops) {
      const i = text.indexOf(s);
      if (i >= 0 && (at < 0 || i < at || (i === at && s.length > (stop as string).length))) {
        at = i;
        stop = s;
      }
    }
    if (stop !== undefined) {
      this.stopped = true;
      this.pending = '';
      return { text: text.slice(0, this.includeStopText ? at + stop.length : at), stop };
    }
    const hold = this.heldBack(text);
    this.pending = text.slice(text.length - hold);
    return { text: text.slice(0, text.length - hold) };
  }

  /** The text still held back, to emit when generation ends for another reason. */
  flush(): string {
    const rest = this.pending;
    this.pending = '';
    return rest;
  }

  // Length of the longest suffix of `text` that is a proper prefix of some stop string.
  private heldBack(text: string): number {
    let hold = 0;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, text.length); n > hold; n--) {
        if (text.endsWith(s.slice(0, n))) {
          hold = n;
          break;
        }
      }
    }
    return hold;
  }
}

/** Applies stop strings to whole texts: the output of decoding `chunks` one by one. */
export function referenceStopText(chunks: readonly string[], stops: readonly string[], includeStopText = false): StopTextStep {
  const matcher = new StopTextMatcher(stops, includeStopText);
  let text = '';
  for (const chunk of chunks) {
    const step = matcher.push(chunk);
    text += step.text;
    if (step.stop !== undefined) return { text, stop: step.stop };
  }
  return { text: text + matcher.flush() };
}

/**
 * Token-id stop sequences: the first sequence the generated ids end with, or undefined. With
 * `includeStopText` false the caller drops that many trailing ids from the output.
 */
export function matchStopTokens(generated: readonly number[], sequences: readonly (readonly number[])[]): readonly number[] | undefined {
  return sequences.find((s) => s.length <= generated.length && s.every((id, j) => generated[generated.length - s.length + j] === id));
}
