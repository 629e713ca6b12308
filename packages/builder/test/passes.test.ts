import { Network, add, embedding, gatherLogitRows, linear, mul, rmsNorm, silu } from '@kiln/core';
import { Graph, fuseAddNorm, fuseSiblingLinears, fuseSwiglu, fusedName, lowerGraph, planMemory, removeDeadNodes } from '@kiln/builder';
import { getArchitecture } from '@kiln/models';

/** A two-branch MLP block with an unused side computation. */
function mlpNetwork(options: { deadBranch?: boolean; bias?: boolean } = {}): Network {
  const network = new Network('test');
  const x = network.input('x', 'float32', ['tokens', 8]);
  const gateW = network.parameter('mlp.gate.weight', [16, 8]);
  const upW = network.parameter('mlp.fc.weight', [16, 8]);
  const downW = network.parameter('mlp.proj.weight', [8, 16]);
  const gateB = options.bias ? network.parameter('mlp.gate.bias', [16]) : undefined;
  const upB = options.bias ? network.parameter('mlp.fc.bias', [16]) : undefined;
  const h = mul(silu(linear(x, gateW, gateB)), linear(x, upW, upB));
  if (options.deadBranch) {
    const unused = network.parameter('unused.weight', [4, 8]);
    linear(x, unused);
  }
  network.output('y', add(x, linear(h, downW)));
  return network;
}

describe('remove-dead-nodes', () => {
  test('drops nodes that do not reach an output, and their parameters', () => {
    const graph = new Graph(mlpNetwork({ deadBranch: true }).toJSON());
    expect(graph.nodes).toHaveLength(7);
    expect(removeDeadNodes(graph)).toBe(1);
    expect(graph.nodes.map((n) => n.op)).toEqual(['linear', 'silu', 'linear', 'mul', 'linear', 'add']);
    expect([...graph.values.values()].some((v) => v.name === 'unused.weight')).toBe(false);
  });

  test('keeps everything when all nodes are live', () => {
    const graph = new Graph(mlpNetwork().toJSON());
    expect(removeDeadNodes(graph)).toBe(0);
    expect(graph.nodes).toHaveLength(6);
  });
});

describe('fuse-sibling-linears (gate/up and QKV fusion)', () => {
  test('fuses the linears that share an input into one, with column slices', () => {
    const graph = new Graph(mlpNetwork().toJSON());
    expect(fuseSiblingLinears(graph)).toBe(1);
    const ops = graph.nodes.map((n) => n.op);
    expect(ops).toEqual(['linear', 'slice', 'slice', 'silu', 'mul', 'linear', 'add']);
    const fused = graph.value(graph.nodes[0].inputs[1]);
    expect(fused.name).toBe('mlp.gate+fc.weight');
    expect(fused.shape).toEqual([32, 8]);
    expect(fused.sources).toEqual(['mlp.gate.weight', 'mlp.fc.weight']);
    expect(graph.nodes[1].attrs).toEqual({ colOffset: 0, cols: 16 });
    expect(graph.nodes[2].attrs).toEqual({ colOffset: 16, cols: 16 });
    // The original weights are gone from the graph.
    expect([...graph.values.values()].filter((v) => v.kind === 'parameter').map((v) => v.name).sort()).toEqual([
      'mlp.gate+fc.weight',
      'mlp.proj.weight',
    ]);
  });

  test('fuses biases too', () => {
    const graph = new Graph(mlpNetwork({ bias: true }).toJSON());
    fuseSiblingLinears(graph);
    const bias = graph.value(graph.nodes[0].inputs[2]);
    expect(bias.name).toBe('mlp.gate+fc.bias');
    expect(bias.sources).toEqual(['mlp.gate.bias', 'mlp.fc.bias']);
  });

  test('fuses q, k and v of every LLaMA layer, and gate/up', () => {
    const llama = getArchitecture('LlamaForCausalLM');
    const config = llama.parseConfig(
      { vocab_size: 32, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2 },
      'config.json',
    );
    const graph = new Graph(llama.buildNetwork(config).toJSON());
    expect(fuseSiblingLinears(graph)).toBe(4);
    const names = [...graph.values.values()].filter((v) => v.kind === 'parameter').map((v) => v.name);
    expect(names).toContain('transformer.layers.0.attention.q+k+v.weight');
    expect(names).toContain('transformer.layers.1.mlp.gate+fc.weight');
    expect(graph.value(graph.nodes.find((n) => n.op === 'linear')!.inputs[1]).shape).toEqual([32, 16]);
  });

  test('names fused weights after their common prefix and suffix', () => {
    expect(fusedName(['a.b.q.weight', 'a.b.k.weight', 'a.b.v.weight'])).toBe('a.b.q+k+v.weight');
  });
});

describe('fuse-swiglu', () => {
  test('turns mul(silu(g), u) into swiglu(g, u)', () => {
    const graph = new Graph(mlpNetwork().toJSON());
    expect(fuseSwiglu(graph)).toBe(1);
    expect(graph.nodes.map((n) => n.op)).toEqual(['linear', 'linear', 'swiglu', 'linear', 'add']);
  });

  test('leaves silu alone when something else reads it', () => {
    const network = new Network('test');
    const x = network.input('x', 'float32', ['tokens', 4]);
    const s = silu(x);
    network.output('y', add(mul(s, x), s));
    const graph = new Graph(network.toJSON());
    expect(fuseSwiglu(graph)).toBe(0);
  });
});

describe('memory plan', () => {
  function planned(network: Network, maxTokens = 10) {
    const graph = new Graph(network.toJSON());
    fuseSiblingLinears(graph);
    fuseSwiglu(graph);
    // Graph inputs other than ids/positions are not buffers in the engine: make x an op output.
    const program = lowerGraph(graph, 'float32');
    return { graph, program, plan: planMemory(graph, program, { tokens: maxTokens, logitRows: 2 }) };
  }

  function chain(): Network {
    const network = new Network('chain');
    const ids = network.input('input_ids', 'int32', ['tokens']);
    const table = network.parameter('embed.weight', [100, 8]);
    const w1 = network.parameter('a.weight', [16, 8]);
    const w2 = network.parameter('b.weight', [16, 8]);
    const w3 = network.parameter('c.weight', [8, 16]);
    const norm = network.parameter('norm.weight', [8]);
    const x = embedding(ids, table);
    const h = mul(silu(linear(x, w1)), linear(x, w2));
    const y = add(x, linear(h, w3));
    network.output('logits', linear(rmsNorm(gatherLogitRows(y), norm, { eps: 1e-5 }), table));
    return network;
  }

  test('no two buffers that are live at the same time overlap', () => {
    const { program, plan } = planned(chain());
    const rows = { tokens: 10, logitRows: 2 };
    // Live ranges per engine value root, recomputed independently from the program.
    const ranges = new Map<number, [number, number]>();
    program.ops.forEach((op, i) => {
      for (const id of op.outputs) ranges.set(id, [i, i]);
    });
    const rootOf = (id: number) => program.views.get(id)?.of ?? id;
    program.ops.forEach((op, i) => {
      for (const id of op.inputs) ranges.get(rootOf(id))![1] = Math.max(ranges.get(rootOf(id))![1], i);
    });
    const extents = [...ranges].map(([id, range]) => {
      const v = plan.values[plan.index.get(id)!];
      return { range, start: v.offset, end: v.offset + rows[v.rows] * v.rowStride * 4 };
    });
    for (const a of extents) {
      for (const b of extents) {
        if (a === b) continue;
        const liveTogether = a.range[0] <= b.range[1] && b.range[0] <= a.range[1];
        const overlap = a.start < b.end && b.start < a.end;
        expect(liveTogether && overlap).toBe(false);
      }
      expect(a.end).toBeLessThanOrEqual(plan.arenaBytes);
    }
    expect(plan.arenaBytes).toBeLessThan(plan.unsharedBytes);
  });

  test('slices of a fused output are views into it', () => {
    const { program, plan } = planned(chain());
    const fused = program.ops.find((op) => op.op === 'linear')!;
    const root = plan.values[plan.index.get(fused.outputs[0])!];
    const views = [...program.views.keys()].map((id) => plan.values[plan.index.get(id)!]);
    expect(views.map((v) => v.offset - root.offset)).toEqual([0, 64]);
    expect(views.every((v) => v.rowStride === 32 && v.cols === 16)).toBe(true);
  });

  test('tied weights are packed once', () => {
    const { program } = planned(chain());
    expect(program.weights.filter((w) => w.name === 'embed.weight')).toHaveLength(1);
  });
});

describe('fuse-add-norm (residual add + norm)', () => {
  function residualNetwork(): Network {
    const network = new Network('test');
    const x = network.input('x', 'float32', ['tokens', 8]);
    const w1 = network.parameter('l1.weight', [8, 8]);
    const n1 = network.parameter('n1.weight', [8]);
    const n2 = network.parameter('n2.weight', [8]);
    const h = add(x, linear(rmsNorm(x, n1, { eps: 1e-5 }), w1)); // norm of an input: not fusable
    const h2 = add(h, linear(rmsNorm(h, n2, { eps: 1e-5 }), w1)); // norm of a sum: fused, the sum still read by h2
    network.output('y', h2);
    return network;
  }

  test('folds the norm that reads an add into it; the sum stays for its other readers', () => {
    const graph = new Graph(residualNetwork().toJSON());
    const before = graph.nodes.map((n) => n.op);
    expect(before).toEqual(['rms_norm', 'linear', 'add', 'rms_norm', 'linear', 'add']);
    expect(fuseAddNorm(graph)).toBe(1);
    expect(graph.nodes.map((n) => n.op)).toEqual(['rms_norm', 'linear', 'add_rms_norm', 'linear', 'add']);
    const fused = graph.nodes[2];
    expect(fused.outputs).toHaveLength(2);
    // The sum is read by the fused node's norm and by the last add.
    expect(graph.consumers(fused.outputs[0]).map((n) => n.op)).toEqual(['add']);
    expect(graph.consumers(fused.outputs[1]).map((n) => n.op)).toEqual(['linear']);
    const program = lowerGraph(graph, 'float32');
    expect(program.ops.map((op) => op.op)).toContain('add_rms_norm');
  });

  test('fuses the residual norms of a LLaMA and a Qwen3, but no grouped q/k norm', () => {
    for (const [architecture, layers] of [['LlamaForCausalLM', 3], ['Qwen3ForCausalLM', 2]] as const) {
      const arch = getArchitecture(architecture);
      const config = arch.parseConfig({
        architectures: [architecture], vocab_size: 64, hidden_size: 32, intermediate_size: 64, num_hidden_layers: layers,
        num_attention_heads: 4, num_key_value_heads: 2, head_dim: 8, max_position_embeddings: 64, rms_norm_eps: 1e-6,
      }, 'test config.json');
      const graph = new Graph(arch.buildNetwork(config as never).toJSON());
      // After attention (the post-attention norm) and after each MLP but the last (the next layer's input
      // norm); the first input norm reads the embedding, and the final norm reads the gathered logit rows.
      expect(fuseAddNorm(graph)).toBe(2 * layers - 1);
      expect(graph.nodes.filter((n) => n.op === 'rms_norm' && n.attrs.groupSize === undefined)).toHaveLength(2);
    }
  });
});
