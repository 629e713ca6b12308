import {
  Network,
  add,
  attention,
  embedding,
  gatherLogitRows,
  gelu,
  layerNorm,
  linear,
  mixtureOfExperts,
  mul,
  positionEmbedding,
  relu,
  rmsNorm,
  softcap,
} from '@kiln/core';
import { Graph, fuseGeglu, fuseSiblingLinears, fuseSwiglu, lowerGraph, passes, planMemory } from '@kiln/builder';

/** A gated-GELU MLP block: mul(gelu(x W_g), x W_u) W_d. */
function gegluNetwork(approximate: 'none' | 'tanh', extraReader = false): Network {
  const network = new Network('geglu');
  const x = network.input('x', 'float32', ['tokens', 8]);
  const g = gelu(linear(x, network.parameter('mlp.gate.weight', [16, 8])), { approximate });
  const h = mul(linear(x, network.parameter('mlp.up.weight', [16, 8])), g);
  const y = linear(h, network.parameter('mlp.down.weight', [8, 16]));
  network.output('y', extraReader ? add(y, linear(g, network.parameter('side.weight', [8, 16]))) : y);
  return network;
}

describe('fuse-geglu', () => {
  test('turns mul(u, gelu(g)) into geglu(g, u), keeping the approximation', () => {
    for (const approximate of ['none', 'tanh'] as const) {
      const graph = new Graph(gegluNetwork(approximate).toJSON());
      expect(fuseGeglu(graph)).toBe(1);
      expect(graph.nodes.map((n) => n.op)).toEqual(['linear', 'linear', 'geglu', 'linear']);
      const geglu = graph.nodes[2];
      expect(geglu.attrs).toEqual({ approximate });
      // gate first: the gelu's input is the gate linear's output.
      expect(graph.producer(geglu.inputs[0])!.inputs[1]).toBe(graph.nodes[0].inputs[1]);
      expect(graph.producer(geglu.inputs[1])!.inputs[1]).toBe(graph.nodes[1].inputs[1]);
    }
  });

  test('leaves gelu alone when something else reads it', () => {
    const graph = new Graph(gegluNetwork('tanh', true).toJSON());
    expect(fuseGeglu(graph)).toBe(0);
    expect(graph.nodes.some((n) => n.op === 'gelu')).toBe(true);
  });

  test('runs among the builder passes, after fuse-swiglu', () => {
    const names = passes.map((p) => p.name);
    expect(names.indexOf('fuse-geglu')).toBeGreaterThan(names.indexOf('fuse-swiglu'));
  });
});

/** Every new op in one small decoder-ish network. */
function everyOpNetwork(): Network {
  const network = new Network('every-op');
  const ids = network.input('input_ids', 'int32', ['tokens']);
  const positions = network.input('position_ids', 'int32', ['tokens']);
  const table = network.parameter('wte', [50, 8]);
  let x = add(embedding(ids, table), positionEmbedding(positions, network.parameter('wpe', [32, 8]), { offset: 2 }));

  // Attention with per-head q/k rms norm, softcap and ALiBi.
  const h = layerNorm(x, network.parameter('ln1.weight', [8]), network.parameter('ln1.bias', [8]), { eps: 1e-5 });
  const q = rmsNorm(linear(h, network.parameter('q.weight', [8, 8])), network.parameter('q_norm.weight', [4]), { eps: 1e-6, groupSize: 4 });
  const k = rmsNorm(linear(h, network.parameter('k.weight', [4, 8])), network.parameter('k_norm.weight', [4]), { eps: 1e-6, groupSize: 4 });
  const v = linear(h, network.parameter('v.weight', [4, 8]));
  const a = attention(q, k, v, { layer: 0, numHeads: 2, numKvHeads: 1, headDim: 4, softcap: 50, alibiSlopes: [0.0625, 0.00390625] });
  x = add(x, linear(a, network.parameter('o.weight', [8, 8])));

  // GeGLU MLP, a relu MLP, then a mixture of experts.
  const m = layerNorm(x, network.parameter('ln2.weight', [8]), undefined, { eps: 1e-5 });
  const geglu = mul(gelu(linear(m, network.parameter('gate.weight', [16, 8])), { approximate: 'tanh' }), linear(m, network.parameter('up.weight', [16, 8])));
  x = add(x, linear(geglu, network.parameter('down.weight', [8, 16])));
  x = add(x, linear(relu(linear(x, network.parameter('fc1.weight', [12, 8]))), network.parameter('fc2.weight', [8, 12])));
  const experts = {
    gate: network.parameter('experts.w1', [4 * 6, 8]),
    up: network.parameter('experts.w3', [4 * 6, 8]),
    down: network.parameter('experts.w2', [4 * 8, 6]),
  };
  x = add(x, mixtureOfExperts(x, network.parameter('router.weight', [4, 8]), experts, { numExperts: 4, topK: 2, normalizeTopK: true }));

  const last = layerNorm(gatherLogitRows(x), network.parameter('ln_f.weight', [8]), network.parameter('ln_f.bias', [8]), { eps: 1e-5 });
  network.output('logits', softcap(linear(last, table), { cap: 30 }));
  return network;
}

describe('lowering the new ops', () => {
  function lowered() {
    const graph = new Graph(everyOpNetwork().toJSON());
    fuseSiblingLinears(graph);
    fuseSwiglu(graph);
    fuseGeglu(graph);
    const program = lowerGraph(graph, 'bfloat16');
    return { graph, program };
  }

  test('every new op lowers to its engine op, with its weights and attributes', () => {
    const { program } = lowered();
    const ops = program.ops.map((op) => op.op);
    for (const op of ['position_embedding', 'layer_norm', 'rms_norm', 'attention', 'geglu', 'relu', 'moe', 'softcap']) {
      expect(ops).toContain(op);
    }
    expect(ops).not.toContain('gelu');
    const weight = (i: number) => program.weights[i];
    const find = (name: string) => program.ops.find((op) => op.op === name)!;

    const pos = find('position_embedding');
    expect(pos.inputs).toEqual([]);
    expect(pos.attrs).toEqual({ offset: 2 });
    expect(weight(pos.weights.table).name).toBe('wpe');

    const norms = program.ops.filter((op) => op.op === 'layer_norm');
    expect(norms).toHaveLength(3);
    expect(weight(norms[0].weights.bias)).toMatchObject({ name: 'ln1.bias', dtype: 'float32' });
    expect(weight(norms[0].weights.weight)).toMatchObject({ name: 'ln1.weight', dtype: 'bfloat16' });
    expect(norms[1].weights).not.toHaveProperty('bias');

    expect(program.ops.filter((op) => op.op === 'rms_norm').map((op) => op.attrs.groupSize)).toEqual([4, 4]);

    const att = find('attention');
    expect(att.attrs.softcap).toBe(50);
    const slopes = weight(att.weights.alibiSlopes);
    expect(slopes.dtype).toBe('float32');
    expect('data' in slopes && Array.from(slopes.data)).toEqual([0.0625, 0.00390625]);

    expect(find('geglu').attrs).toEqual({ approximate: 'tanh' });
    const moe = find('moe');
    expect(moe.attrs).toEqual({ numExperts: 4, topK: 2, normalizeTopK: true });
    expect(Object.fromEntries(Object.entries(moe.weights).map(([slot, i]) => [slot, weight(i).name]))).toEqual({
      router: 'router.weight',
      gate: 'experts.w1',
      up: 'experts.w3',
      down: 'experts.w2',
    });
    expect(find('softcap').attrs).toEqual({ cap: 30 });
  });

  test('the lowered program passes memory planning without overlapping live buffers', () => {
    const { graph, program } = lowered();
    const rows = { tokens: 10, logitRows: 2 };
    const plan = planMemory(graph, program, rows);
    const rootOf = (id: number) => program.views.get(id)?.of ?? id;
    const ranges = new Map<number, [number, number]>();
    program.ops.forEach((op, i) => op.outputs.forEach((id) => ranges.set(id, [i, i])));
    program.ops.forEach((op, i) => {
      for (const id of op.inputs) ranges.get(rootOf(id))![1] = Math.max(ranges.get(rootOf(id))![1], i);
    });
    const extents = [...ranges].map(([id, range]) => {
      const v = plan.values[plan.index.get(id)!];
      return { range, start: v.offset, end: v.offset + rows[v.rows] * v.rowStride * 4 };
    });
    for (const a of extents) {
      for (const b of extents) {
        if (a !== b && a.range[0] <= b.range[1] && b.range[0] <= a.range[1]) expect(a.start < b.end && b.start < a.end).toBe(false);
      }
      expect(a.end).toBeLessThanOrEqual(plan.arenaBytes);
    }
  });

  test('position_embedding must read the graph input "position_ids"', () => {
    const network = new Network('bad');
    const other = network.input('other_ids', 'int32', ['tokens']);
    network.output('y', positionEmbedding(other, network.parameter('wpe', [8, 4])));
    expect(() => lowerGraph(new Graph(network.toJSON()), 'float32')).toThrow(/position_embedding must read the graph input "position_ids"/);
  });
});
