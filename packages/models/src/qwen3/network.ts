import type { Network } from '@kiln/core';
import { DecoderConfig, buildDecoderNetwork } from '../common/decoder';

/** Qwen3: the shared decoder with the switches config.ts sets. */
export function buildQwen3Network(config: DecoderConfig): Network {
  return buildDecoderNetwork(config, 'qwen3');
}
