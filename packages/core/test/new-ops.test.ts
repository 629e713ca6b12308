import {
  Network,
  attention,
  gelu,
  layerNorm,
  mixtureOfExperts,
  positionEmbedding,
  relu,
  rmsNorm,
  softcap,
} from '@kiln/core';

describe('shape checks of the ops added for GPT-2 .. Mixtral', () => {
  const network = new Network();
  const x = network.input('x', 'float32', ['tokens', 8]);
  const positions = network.input('position_ids', 'int32', ['tokens']);

  test('layerNorm: weight and optional bias must match the features', () => {
    const y = layerNorm(x, network.parameter('ln.weight', [8]), network.parameter('ln.bias', [8]), { eps: 1e-5 });
    expect(y.shape).toEqual(['tokens', 8]);
    expect(layerNorm(x, network.parameter('ln.weight', [8]), undefined, { eps: 1e-5 }).shape).toEqual(['tokens', 8]);
    expect(() => layerNorm(x, network.parameter('ln2.weight', [7]), undefined, { eps: 1e-5 })).toThrow(/layer_norm: weight ln2.weight\[7\]/);
    expect(() => layerNorm(x, network.parameter('ln.weight', [8]), network.parameter('ln3.bias', [4]), { eps: 1e-5 })).toThrow(
      /layer_norm: bias ln3.bias\[4\]/,
    );
  });

  test('gelu records its approximation, and refuses unknown ones; relu and softcap keep the shape', () => {
    const network2 = new Network();
    const x2 = network2.input('x', 'float32', ['tokens', 4]);
    gelu(x2);
    gelu(x2, { approximate: 'tanh' });
    relu(x2);
    softcap(x2, { cap: 30 });
    const nodes = network2.toJSON().nodes;
    expect(nodes.map((n) => [n.op, n.attrs])).toEqual([
      ['gelu', { approximate: 'none' }],
      ['gelu', { approximate: 'tanh' }],
      ['relu', {}],
      ['softcap', { cap: 30 }],
    ]);
    expect(() => gelu(x2, { approximate: 'fast' as 'tanh' })).toThrow(/gelu: approximate must be/);
    expect(() => softcap(x2, { cap: 0 })).toThrow(/softcap: cap must be a positive number/);
  });

  test('rmsNorm groupSize: weight [groupSize], groups must divide the features', () => {
    expect(rmsNorm(x, network.parameter('qn.weight', [4]), { eps: 1e-6, groupSize: 4 }).shape).toEqual(['tokens', 8]);
    expect(() => rmsNorm(x, network.parameter('qn.weight', [4]), { eps: 1e-6 })).toThrow(/rms_norm: weight qn.weight\[4\]/);
    expect(() => rmsNorm(x, network.parameter('qn3.weight', [3]), { eps: 1e-6, groupSize: 3 })).toThrow(/groupSize 3 does not divide/);
    expect(() => rmsNorm(x, network.parameter('qn8.weight', [8]), { eps: 1e-6, groupSize: 4 })).toThrow(/is not \[groupSize 4\]/);
  });

  test('positionEmbedding: int32 [tokens] positions, a 2-D table, offset >= 0', () => {
    const table = network.parameter('wpe', [16, 8]);
    expect(positionEmbedding(positions, table, { offset: 2 }).shape).toEqual(['tokens', 8]);
    expect(() => positionEmbedding(x, table)).toThrow(/position_embedding: positions must be int32/);
    expect(() => positionEmbedding(positions, network.parameter('wpe1', [16]))).toThrow(/table must be \[positions, hidden\]/);
    expect(() => positionEmbedding(positions, table, { offset: -1 })).toThrow(/offset must be an integer >= 0/);
  });

  test('attention: softcap >= 0 and one ALiBi slope per query head, recorded only when used', () => {
    const q = network.input('q', 'float32', ['tokens', 8]);
    const kv = network.input('kv', 'float32', ['tokens', 4]);
    const base = { layer: 0, numHeads: 2, numKvHeads: 1, headDim: 4 };
    attention(q, kv, kv, base);
    attention(q, kv, kv, { ...base, softcap: 50, alibiSlopes: [0.5, 0.25] });
    const nodes = network.toJSON().nodes.filter((n) => n.op === 'attention');
    expect(nodes[0].attrs).not.toHaveProperty('softcap');
    expect(nodes[0].attrs).not.toHaveProperty('alibiSlopes');
    expect(nodes[1].attrs).toMatchObject({ softcap: 50, alibiSlopes: [0.5, 0.25] });
    expect(() => attention(q, kv, kv, { ...base, alibiSlopes: [1] })).toThrow(/alibiSlopes must be 2 finite numbers/);
    expect(() => attention(q, kv, kv, { ...base, softcap: -1 })).toThrow(/softcap must be > 0/);
  });

  test('mixtureOfExperts: router [E, H], gate/up [E*I, H], down [E*H, I], 1 <= topK <= E', () => {
    const router = network.parameter('moe.router', [4, 8]);
    const gate = network.parameter('moe.gate', [4 * 6, 8]);
    const up = network.parameter('moe.up', [4 * 6, 8]);
    const down = network.parameter('moe.down', [4 * 8, 6]);
    const options = { numExperts: 4, topK: 2, normalizeTopK: true };
    expect(mixtureOfExperts(x, router, { gate, up, down }, options).shape).toEqual(['tokens', 8]);
    expect(() => mixtureOfExperts(x, router, { gate, up, down }, { ...options, topK: 5 })).toThrow(/topK must be an integer in \[1, 4\]/);
    expect(() => mixtureOfExperts(x, network.parameter('r3', [3, 8]), { gate, up, down }, options)).toThrow(/router r3\[3, 8\] is not \[4, 8\]/);
    expect(() => mixtureOfExperts(x, router, { gate: network.parameter('g5', [22, 8]), up, down }, options)).toThrow(/gate g5/);
    expect(() => mixtureOfExperts(x, router, { gate, up: network.parameter('u5', [24, 7]), down }, options)).toThrow(/up u5/);
    expect(() => mixtureOfExperts(x, router, { gate, up, down: network.parameter('d5', [32, 5]) }, options)).toThrow(/down d5/);
  });
});
