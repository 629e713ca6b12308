// Acceptance test (see reference-suite.ts): LayerNorm models with RoPE, most with parallel attention and MLP.
import { describeReferenceFixtures } from './reference-suite';

describeReferenceFixtures(['phi', 'gpt_neox', 'falcon', 'gptj', 'starcoder2']);
