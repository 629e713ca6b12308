import type { Network } from '@kiln/core';
import { DecoderConfig, buildDecoderNetwork } from '../common/decoder';

/** Gemma 2: the shared decoder with the switches config.ts sets. */
export function buildGemma2Network(config: DecoderConfig): Network {
  return buildDecoderNetwork(config, 'gemma2');
}
