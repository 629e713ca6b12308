import type { Network } from '@kiln/core';
import { DecoderConfig, buildDecoderNetwork } from '../common/decoder';

/** Gemma: the shared decoder with the switches config.ts sets. */
export function buildGemmaNetwork(config: DecoderConfig): Network {
  return buildDecoderNetwork(config, 'gemma');
}
