import type { Network } from '@kiln/core';
import { DecoderConfig, buildDecoderNetwork } from '../common/decoder';

/** GPT-J: the shared decoder with the switches config.ts sets. */
export function buildGptjNetwork(config: DecoderConfig): Network {
  return buildDecoderNetwork(config, 'gptj');
}
