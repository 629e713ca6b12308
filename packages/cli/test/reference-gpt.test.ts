// Acceptance test (see reference-suite.ts): GPT-2 style models (learned positions or ALiBi).
import { describeReferenceFixtures } from './reference-suite';

describeReferenceFixtures(['gpt2', 'gpt_bigcode', 'opt', 'bloom']);
