// Acceptance test (see reference-suite.ts): the LLaMA variants of the zoo.
import { describeReferenceFixtures } from './reference-suite';

describeReferenceFixtures(['qwen3', 'gemma', 'gemma2', 'phi3', 'mixtral']);
