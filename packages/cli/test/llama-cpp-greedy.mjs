// Runs a GGUF file in llama.cpp through node-llama-cpp (its prebuilt CPU binary; nothing is downloaded
// or built), in a process of its own so its native library never shares one with Kiln's addon.
//   node llama-cpp-greedy.mjs <file.gguf> '<json request>'
// Request: { prompts: number[][], maxTokens: number, forced?: number[][], texts?: string[], topLogits?: number,
// flashAttention?: boolean }.
// Prints one JSON object: { generated: number[][] } — greedy continuations of each prompt, past any end
// of generation token — or, with
// `forced`, { predicted: number[][] }: llama.cpp's greedy choice at each position of prompt + forced[i]
// (teacher forcing: the agreement of two engines without one early difference derailing the rest);
// with `texts`, also { tokenized: number[][] } (llama.cpp's tokenization of each text, no BOS); with
// `forced` and `topLogits: n`, also { topLogits: Array<Array<[token, logit][]>> }: llama.cpp's n largest
// raw logits at each forced position.
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';

const [modelPath, requestJson] = process.argv.slice(2);
const request = JSON.parse(requestJson);
const llama = await getLlama({ gpu: false, build: 'never', usePrebuiltBinaries: true, skipDownload: true, logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath });
const result = {};
for (const [i, prompt] of request.prompts.entries()) {
  // One thread: llama.cpp's spinning workers crawl on a shared 2-core machine (70 s instead of 40 ms).
  // flashAttention: node-llama-cpp's default ("auto": on for the CPU) unless the request says; Kiln's
  // q8_0 engines reproduce llama.cpp's attention without it (decision 0016).
  const context = await model.createContext({
    contextSize: 512,
    batchSize: 512,
    threads: 1,
    ...(request.flashAttention !== undefined ? { flashAttention: request.flashAttention } : {}),
  });
  const sequence = context.getSequence();
  if (request.forced) {
    const input = [...prompt, ...request.forced[i]];
    const next = { token: true, options: { temperature: 0 }, ...(request.topLogits ? { logits: { filter: { includeTop: request.topLogits } } } : {}) };
    const items = input.map((token, j) => (j >= prompt.length - 1 && j < input.length - 1 ? [token, { generateNext: next }] : token));
    const outputs = (await sequence.controlledEvaluate(items)).filter((o) => o?.next?.token !== undefined);
    (result.predicted ??= []).push(outputs.map((o) => o.next.token));
    if (request.topLogits) (result.topLogits ??= []).push(outputs.map((o) => [...o.next.logits]));
  } else {
    // Token by token through controlledEvaluate rather than `evaluate`, which stops at an end-of-generation
    // token: Kiln's side runs with ignoreEos, so both continue past it.
    const greedy = { generateNext: { token: true, options: { temperature: 0 } } };
    const tokens = [];
    let input = [...prompt.slice(0, -1), [prompt[prompt.length - 1], greedy]];
    while (tokens.length < request.maxTokens) {
      const outputs = await sequence.controlledEvaluate(input);
      const token = outputs[outputs.length - 1].next.token;
      tokens.push(token);
      input = [[token, greedy]];
    }
    (result.generated ??= []).push(tokens);
  }
  await context.dispose();
}
if (request.texts) result.tokenized = request.texts.map((text) => [...model.tokenize(text)]);
await model.dispose();
await llama.dispose();
process.stdout.write(`${JSON.stringify(result)}\n`);
