import type { Network } from '@kiln/core';
import { DecoderConfig, buildDecoderNetwork } from '../common/decoder';

/** GPT-2: the shared decoder with the switches config.ts sets. */
export function buildGpt2Network(config: DecoderConfig): Network {
  return buildDecoderNetwork(config, 'gpt2');
}
