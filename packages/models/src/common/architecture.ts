import type { Network } from '@kiln/core';
import type { ArchitectureDefinition, CheckpointTensorPlan } from '../types';
import type { HfConfig } from '../hf-config';
import { DecoderConfig, buildDecoderNetwork } from './decoder';

/** Tensors no zoo family converts: rotary tables (recomputed) and causal-mask buffers of old checkpoints. */
export const BUFFER_TENSORS = [/\.rotary_emb\.inv_freq$/, /\.attn\.(masked_)?bias$/, /\.attention\.(masked_)?bias$/];

/** An architecture built on the shared decoder. */
export function decoderArchitecture(options: {
  name: string;
  family: string;
  parseConfig: (config: HfConfig, file: string) => DecoderConfig;
  checkpointTensors: (config: DecoderConfig) => CheckpointTensorPlan[];
  /** Beyond BUFFER_TENSORS, e.g. the `lm_head.weight` copy a tied model may ship. */
  ignoredTensors?: RegExp[];
  /** Default: the shared decoder, named after the family. */
  buildNetwork?: (config: DecoderConfig) => Network;
}): ArchitectureDefinition<DecoderConfig> {
  return {
    name: options.name,
    family: options.family,
    parseConfig: options.parseConfig,
    checkpointTensors: options.checkpointTensors,
    ignoredTensors: [...BUFFER_TENSORS, ...(options.ignoredTensors ?? [])],
    buildNetwork: options.buildNetwork ?? ((config) => buildDecoderNetwork(config, options.family)),
  };
}
