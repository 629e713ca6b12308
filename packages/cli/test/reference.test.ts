// Acceptance test, LLaMA family: see reference-suite.ts. The other architectures are in
// reference-*.test.ts (split so Jest runs them in parallel).
import { describeReferenceFixtures } from './reference-suite';

describeReferenceFixtures(['llama', 'llama_bf16', 'llama3_scaled_rope', 'mistral', 'qwen2', 'qwen2_bf16']);
