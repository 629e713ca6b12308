import {
  Embedding,
  Linear,
  Network,
  RmsNorm,
  attention,
  defaultInverseFrequencies,
  gatherLogitRows,
  linear,
  ropeInverseFrequencies,
  rotaryEmbedding,
} from '@kiln/core';

describe('Network', () => {
  test('records inputs, parameters, nodes and outputs, and serializes them by id', () => {
    const network = new Network('tiny');
    const ids = network.input('input_ids', 'int32', ['tokens']);
    const embed = new Embedding(network, 'embed', 10, 4);
    const head = new Linear(network, 'head', 4, 10, { bias: true });
    const logits = head.forward(gatherLogitRows(embed.forward(ids)));
    network.output('logits', logits);
    const json = network.toJSON();
    expect(Object.keys(json.parameters)).toEqual(['embed.weight', 'head.weight', 'head.bias']);
    expect(json.nodes.map((n) => n.op)).toEqual(['embedding', 'gather_rows', 'linear']);
    expect(json.values[json.outputs.logits].shape).toEqual(['logitRows', 10]);
  });

  test('asking for a parameter twice returns the same tensor (tied weights), a different shape is an error', () => {
    const network = new Network();
    const a = network.parameter('w', [2, 3]);
    expect(network.parameter('w', [2, 3])).toBe(a);
    expect(() => network.parameter('w', [3, 2])).toThrow(/redeclared with shape \[3,2\]/);
  });

  test('modules name parameters by their path', () => {
    const network = new Network();
    const norm = new RmsNorm(network, 'transformer.layers.0.input_layernorm', 8, 1e-5);
    expect(norm.namedParameters().map(([name]) => name)).toEqual(['transformer.layers.0.input_layernorm.weight']);
  });

  test('tensors of another network are refused', () => {
    const a = new Network('a');
    const b = new Network('b');
    const x = a.input('x', 'float32', ['tokens', 4]);
    expect(() => linear(x, b.parameter('w', [4, 4]))).toThrow(/belongs to another network/);
  });
});

describe('op shape checks', () => {
  const network = new Network();
  const x = network.input('x', 'float32', ['tokens', 8]);
  const positions = network.input('position_ids', 'int32', ['tokens']);

  test('linear rejects a weight of the wrong width', () => {
    expect(() => linear(x, network.parameter('w1', [4, 7]))).toThrow(/linear: weight w1\[4, 7\] does not take input x\[tokens, 8\]/);
  });

  test('rope checks heads and frequencies', () => {
    expect(() => rotaryEmbedding(x, positions, { numHeads: 3, headDim: 4, inverseFrequencies: [1, 1] })).toThrow(/not 3 heads of 4/);
    expect(() => rotaryEmbedding(x, positions, { numHeads: 2, headDim: 4, inverseFrequencies: [1] })).toThrow(/needs 2 inverse/);
    const y = rotaryEmbedding(x, positions, { numHeads: 2, headDim: 4, inverseFrequencies: [1, 0.5] });
    expect(y.shape).toEqual(['tokens', 8]);
  });

  test('attention checks grouped-query head counts', () => {
    const k = network.input('k', 'float32', ['tokens', 4]);
    expect(() => attention(x, k, k, { layer: 0, numHeads: 3, numKvHeads: 2, headDim: 4 })).toThrow(/not a multiple/);
    const out = attention(x, k, k, { layer: 0, numHeads: 2, numKvHeads: 1, headDim: 4 });
    expect(out.shape).toEqual(['tokens', 8]);
  });
});

describe('rope inverse frequencies', () => {
  test('default: 1 / base^(2i/dim) in float32', () => {
    const f = defaultInverseFrequencies(10000, 8);
    expect(f).toEqual([1, Math.fround(0.1), Math.fround(0.01), Math.fround(0.001)].map(Math.fround));
  });

  test('linear scaling divides by the factor', () => {
    const base = defaultInverseFrequencies(10000, 8);
    expect(ropeInverseFrequencies(10000, 8, { type: 'linear', factor: 4 })).toEqual(base.map((f) => Math.fround(f / 4)));
  });

  test('llama3 scaling keeps high frequencies, divides low ones, and interpolates between', () => {
    const base = defaultInverseFrequencies(500000, 16);
    const scaled = ropeInverseFrequencies(500000, 16, {
      type: 'llama3',
      factor: 8,
      lowFreqFactor: 1,
      highFreqFactor: 4,
      originalMaxPositionEmbeddings: 32,
    });
    // wavelength 2π/f: < 32/4 = 8 keeps f; > 32 divides by 8; in between is a blend of the two.
    base.forEach((f, i) => {
      const wavelength = (2 * Math.PI) / f;
      if (wavelength < 8) expect(scaled[i]).toBe(f);
      else if (wavelength > 32) expect(scaled[i]).toBeCloseTo(f / 8, 12);
      else {
        expect(scaled[i]).toBeLessThanOrEqual(f);
        expect(scaled[i]).toBeGreaterThanOrEqual(Math.fround(f / 8));
      }
    });
    expect(scaled[0]).toBe(base[0]);
    expect(scaled[7]).toBeCloseTo(base[7] / 8, 12);
  });
});
