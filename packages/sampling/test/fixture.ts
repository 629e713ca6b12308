// The 40 logits-processor cases of fixtures/sampling/logits_processors.json (transformers 5.17): raw
// logits, the context ids, the processor parameters and the resulting probabilities.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SamplingConfig } from '@kiln/sampling';

export interface ProcessorCase {
  params: { repetition_penalty: number; temperature: number; top_k: number; top_p: number; min_p: number; no_repeat_ngram_size: number };
  logits: number[];
  context_ids: number[];
  probs: number[];
}

export const fixture: { order: string[]; source: string; cases: ProcessorCase[] } = JSON.parse(
  readFileSync(join(__dirname, '../../../fixtures/sampling/logits_processors.json'), 'utf8'),
);

/** The fixture's transformers parameters as a SamplingConfig. */
export function configOf(params: ProcessorCase['params']): SamplingConfig {
  return {
    repetitionPenalty: params.repetition_penalty,
    temperature: params.temperature,
    topK: params.top_k,
    topP: params.top_p,
    minP: params.min_p,
    noRepeatNgramSize: params.no_repeat_ngram_size,
  };
}
