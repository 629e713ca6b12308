import type { Network } from '@kiln/core';
import { DecoderConfig, buildDecoderNetwork } from '../common/decoder';

/** Mixtral: the shared decoder with the switches config.ts sets. */
export function buildMixtralNetwork(config: DecoderConfig): Network {
  return buildDecoderNetwork(config, 'mixtral');
}
