// One generated sequence ("choice") of an HTTP request, over the executor: queued synchronously (so
// an invalid request fails before any byte of the response is written), then streamed as text deltas.
// Stop strings are matched here, on the detokenized text, as vLLM's detokenizer does: text that could
// be the start of a stop string is held back until it is known not to be, and a match cancels the
// request and ends the text just before the stop string (OpenAI's `stop`).
import type { ExecutorEvent, ExecutorRequest, LLM } from '@kiln/runtime';
import type { ServerMetrics } from './metrics';

/** Log-probability of one generated token and of the most likely tokens at its step. */
export interface TokenLogprob {
  token: number;
  logprob: number;
  top: { token: number; logprob: number }[];
}

export interface ChoiceRequest extends Omit<ExecutorRequest, 'inputIds' | 'returnContextLogits' | 'returnGenerationLogits' | 'logprobs'> {
  inputIds: number[];
  /** Stop strings, matched on the text. */
  stop: string[];
  /** Undefined: no logprobs. 0: the chosen token's only. N: and the N most likely tokens. */
  logprobs?: number;
  signal: AbortSignal;
}

/** The runtime's finish reasons (docs/cancellation.md); each protocol maps them to its own names. */
export type ChoiceFinishReason = 'eos' | 'stop' | 'length' | 'cancelled';

export interface ChoiceDelta {
  text: string;
  /** Tokens generated since the previous delta. */
  tokenIds: number[];
  /** One per token of `tokenIds`, when logprobs were asked for. */
  logprobs?: TokenLogprob[];
  /** Tokens generated so far, in all. */
  numOutputTokens: number;
  /** Set on the last delta. */
  finishReason?: ChoiceFinishReason;
}

// Whether the executor returns logprobs itself (`ExecutorEvent.logprobs`, one `{logprob, top}` per
// output token, as @kiln/sampling's referenceLogprobs). Until it is seen to, logprobs are computed here
// from the generation logits (the raw model distribution, which is the sampled one for greedy decoding).
let executorReturnsLogprobs = false;

/** The executor's logprobs of an event, when it gives them. */
function executorLogprobs(event: ExecutorEvent): TokenLogprob[] | undefined {
  const raw = (event as { logprobs?: unknown }).logprobs;
  if (!Array.isArray(raw)) return undefined;
  executorReturnsLogprobs = true;
  return raw.map((entry: { logprob: number; top?: { token?: number; id?: number; logprob: number }[] }, k) => ({
    token: event.outputIds[k],
    logprob: entry.logprob,
    top: (entry.top ?? []).map((t) => ({ token: (t.token ?? t.id) as number, logprob: t.logprob })),
  }));
}

/** Log-softmax of each logits row and its `count` most likely tokens (lowest id first on ties). */
function logprobsFromLogits(logits: Float32Array, tokens: number[], vocabSize: number, count: number): TokenLogprob[] {
  return tokens.map((token, row) => {
    const values = logits.subarray(row * vocabSize, (row + 1) * vocabSize);
    let max = -Infinity;
    for (const v of values) if (v > max) max = v;
    let sum = 0;
    for (const v of values) sum += Math.exp(v - max);
    const logZ = max + Math.log(sum);
    const top: { token: number; logprob: number }[] = [];
    if (count > 0) {
      // A partial selection: keep the `count` best seen so far, sorted.
      for (let id = 0; id < values.length; id++) {
        const lp = values[id] - logZ;
        if (top.length === count && lp <= top[count - 1].logprob) continue;
        let at = top.length;
        while (at > 0 && top[at - 1].logprob < lp) at--;
        top.splice(at, 0, { token: id, logprob: lp });
        if (top.length > count) top.pop();
      }
    }
    return { token, logprob: values[token] - logZ, top };
  });
}

/** The length of the longest suffix of `text` that is a proper prefix of a stop string. */
function partialStopLength(text: string, stops: string[]): number {
  let longest = 0;
  for (const stop of stops) {
    for (let length = Math.min(stop.length - 1, text.length); length > longest; length--) {
      if (text.endsWith(stop.slice(0, length))) {
        longest = length;
        break;
      }
    }
  }
  return longest;
}

/**
 * Queues one choice on the executor now (throwing, synchronously, on an invalid request) and returns
 * its deltas. Aborting `request.signal`, or leaving the loop early, cancels it.
 */
/** A choice's deltas, and flow control: a paused choice keeps its KV blocks and takes no step. */
export interface Choice extends AsyncIterable<ChoiceDelta> {
  setPaused(paused: boolean): void;
}

export function startChoice(llm: LLM, metrics: ServerMetrics, request: ChoiceRequest): Choice {
  const { stop, logprobs, signal, ...sampling } = request;
  const executor = llm.engine.executor;
  const wantLogprobs = logprobs !== undefined;
  const queue: ExecutorEvent[] = [];
  let wake: (() => void) | undefined;
  const push = (event: ExecutorEvent): void => {
    queue.push(event);
    wake?.();
  };
  const executorRequest = {
    ...sampling,
    logprobs: wantLogprobs ? Math.max(logprobs, 1) : undefined,
    returnGenerationLogits: wantLogprobs && !executorReturnsLogprobs,
  };
  // A constrained choice (response_format, a required tool call) is queued once its first token mask
  // is computed; cancelling and pausing wait for its id.
  let id: number | undefined;
  let cancelled = false;
  let pausedNow = false;
  if (request.tokenMask) {
    void executor.enqueueAsync(executorRequest, push).then(
      (assigned) => {
        id = assigned;
        if (cancelled) executor.cancel(assigned);
        else if (pausedNow) executor.setPaused(assigned, true);
      },
      (error: unknown) => push({ requestId: 0, iteration: 0, outputIds: [], finishReason: 'error', failure: error } as ExecutorEvent),
    );
  } else {
    id = executor.enqueue(executorRequest, push);
  }
  metrics.promptTokens.inc(request.inputIds.length);
  const cancel = (): void => {
    cancelled = true;
    if (id !== undefined) executor.cancel(id);
  };
  if (signal.aborted) cancel();
  else signal.addEventListener('abort', cancel, { once: true });

  async function* deltas(): AsyncGenerator<ChoiceDelta, void, undefined> {
    const decoder = llm.tokenizer.createStreamDecoder({ skipSpecialTokens: true });
    const maxStop = stop.reduce((n, s) => Math.max(n, s.length), 0);
    let text = '';  // all text decoded so far
    let emitted = 0;  // how much of it was handed out
    let numOutputTokens = 0;
    let executorDone = false;  // the executor sent the request's last event
    try {
      for (;;) {
        while (queue.length === 0) await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
        const event = queue.shift() as ExecutorEvent;
        if (event.finishReason === 'error') {
          executorDone = true;
          const failure = (event as { failure?: unknown }).failure;
          if (failure !== undefined) throw failure;
          const reason = (event as { error?: string }).error;
          throw new Error(`the executor failed request ${id}${reason ? `: ${reason}` : ''}`);
        }
        numOutputTokens += event.outputIds.length;
        for (const token of event.outputIds) text += decoder.push(token);
        if (event.finishReason !== undefined) text += decoder.flush();
        let lp: TokenLogprob[] | undefined;
        if (wantLogprobs) {
          lp = executorLogprobs(event) ??
            (event.generationLogits ? logprobsFromLogits(event.generationLogits, event.outputIds, llm.engine.vocabSize, logprobs) : undefined);
        }
        if (event.finishReason !== undefined) {
          executorDone = true;
          metrics.recordRequest(event.stats);
        }
        if (maxStop > 0) {
          // A stop string can only begin in the last (maxStop - 1) emitted characters or later.
          let at = -1;
          for (const s of stop) {
            const found = text.indexOf(s, Math.max(0, emitted - s.length + 1));
            if (found >= 0 && (at < 0 || found < at)) at = found;
          }
          if (at >= 0) {
            const delta = text.slice(emitted, at);
            if (!executorDone) metrics.generatedTokens.inc(numOutputTokens);
            yield { text: delta, tokenIds: event.outputIds, logprobs: lp, numOutputTokens, finishReason: 'stop' };
            return;
          }
        }
        const end = event.finishReason !== undefined ? text.length : text.length - partialStopLength(text.slice(emitted), stop);
        const delta = text.slice(emitted, end);
        emitted = end;
        const finishReason = event.finishReason as ChoiceFinishReason | undefined;
        if (delta || event.outputIds.length > 0 || finishReason) {
          yield { text: delta, tokenIds: event.outputIds, logprobs: lp, numOutputTokens, finishReason };
        }
        if (finishReason) return;
      }
    } finally {
      signal.removeEventListener('abort', cancel);
      // Left early (a stop string, a client gone, an error while writing): free its KV blocks now.
      if (!executorDone) cancel();
    }
  }
  let paused = false;
  return {
    [Symbol.asyncIterator]: deltas,
    setPaused(value: boolean): void {
      if (value === paused) return;
      paused = value;
      pausedNow = value;
      if (id !== undefined) executor.setPaused(id, value);
    },
  };
}

/** A choice run to its end. */
export async function collectChoice(choice: AsyncIterable<ChoiceDelta>): Promise<{ text: string; tokenIds: number[]; logprobs?: TokenLogprob[]; finishReason: ChoiceFinishReason }> {
  let text = '';
  const tokenIds: number[] = [];
  let logprobs: TokenLogprob[] | undefined;
  for await (const delta of choice) {
    text += delta.text;
    tokenIds.push(...delta.tokenIds);
    if (delta.logprobs) (logprobs ??= []).push(...delta.logprobs);
    if (delta.finishReason) return { text, tokenIds, logprobs, finishReason: delta.finishReason };
  }
  throw new Error('the generation ended without a finish reason');
}
