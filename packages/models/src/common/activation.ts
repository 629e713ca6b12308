// The activations of transformers' ACT2FN that Kiln's ops cover, by their config names.
import { Tensor, gelu, relu, silu } from '@kiln/core';
import { ConfigError } from '../registry';

/** Kiln's activation kinds; a model config stores one of these (JSON, no functions). */
export type Activation = 'silu' | 'gelu' | 'gelu_tanh' | 'relu';

/**
 * HF names -> Kiln kinds. "gelu" is the exact (erf) GELU; gelu_new, gelu_pytorch_tanh and gelu_fast are
 * all the tanh approximation (the same formula, written differently). BLOOM's own GELU is tanh too.
 */
const HF_ACTIVATIONS: Record<string, Activation> = {
  silu: 'silu',
  swish: 'silu',
  gelu: 'gelu',
  gelu_new: 'gelu_tanh',
  gelu_pytorch_tanh: 'gelu_tanh',
  gelu_fast: 'gelu_tanh',
  relu: 'relu',
};

/** Maps the config's activation name; an unknown one fails naming the key and the supported names. */
export function parseActivation(name: string, key: string, file: string): Activation {
  const activation = HF_ACTIVATIONS[name];
  if (!activation) {
    throw new ConfigError(file, key, `"${name}" is not supported (supported: ${Object.keys(HF_ACTIVATIONS).join(', ')})`);
  }
  return activation;
}

export function applyActivation(x: Tensor, activation: Activation): Tensor {
  switch (activation) {
    case 'silu':
      return silu(x);
    case 'gelu':
      return gelu(x, { approximate: 'none' });
    case 'gelu_tanh':
      return gelu(x, { approximate: 'tanh' });
    case 'relu':
      return relu(x);
  }
}
