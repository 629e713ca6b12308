import type { Network } from '@kiln/core';
import { DecoderConfig, buildDecoderNetwork } from '../common/decoder';

/** Starcoder2: the shared decoder with the switches config.ts sets. */
export function buildStarcoder2Network(config: DecoderConfig): Network {
  return buildDecoderNetwork(config, 'starcoder2');
}
