import type { Network } from '@kiln/core';
import { DecoderConfig, buildDecoderNetwork } from '../common/decoder';

/** OPT: the shared decoder with the switches config.ts sets. */
export function buildOptNetwork(config: DecoderConfig): Network {
  return buildDecoderNetwork(config, 'opt');
}
