// @kiln/model-example: a Kiln architecture that lives outside @kiln/models. Requiring this package
// registers TinyLlamaForCausalLM; its package.json's `"kiln": { "architectures": [...] }` is how the
// kiln CLI finds it (loadArchitecturePlugins). See packages/models/ADDING_AN_ARCHITECTURE.md.
import { type ArchitectureDefinition, listArchitectures, registerArchitecture } from '@kiln/models';
import { tinyLlamaCheckpointTensors } from './checkpoint';
import { type TinyLlamaConfig, parseTinyLlamaConfig } from './config';
import { buildTinyLlamaNetwork } from './network';

export type { TinyLlamaConfig } from './config';
export { parseTinyLlamaConfig, tinyLlamaCheckpointTensors, buildTinyLlamaNetwork };

export const tinyLlama: ArchitectureDefinition<TinyLlamaConfig> = {
  name: 'TinyLlamaForCausalLM',
  family: 'tiny_llama',
  parseConfig: parseTinyLlamaConfig,
  checkpointTensors: tinyLlamaCheckpointTensors,
  // transformers does not save rotary tables any more, but older checkpoints carry them.
  ignoredTensors: [/\.rotary_emb\.inv_freq$/],
  buildNetwork: buildTinyLlamaNetwork,
};

// Registering twice would throw; a second copy of this package (or a second require of a copy under
// another path) must not break the CLI.
if (!listArchitectures().includes(tinyLlama.name)) registerArchitecture(tinyLlama);
