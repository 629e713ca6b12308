// CUDA engines: the small ops around a linear become its prologue or epilogue, so that a decode step's
// GEMV does them in the same kernel (TensorRT-LLM's fused GEMM plugins; vLLM's fused rope / SwiGLU /
// residual-norm kernels). At batch 1 a decode step is a chain of ~240 dependent kernels, most of them a
// few microseconds of launch and DRAM latency around a few kilobytes of work (docs/benchmarks.md); this
// pass removes about half of them. Rewrites, on the lowered program:
//
// - rope:     linear -> h; rope(h[:, q]) -> q', rope(h[:, k]) -> k'     => linear(epilogue rope) -> [q', k', h]
//             (and the attention after it finds K and V stored: linear attr kvLayer, attention kvStored)
// - swiglu:   linear -> h; swiglu(h[:, :I], h[:, I:]) -> o                => linear(epilogue swiglu) -> [o, h]
// - residual: linear -> a; add(b, a) -> s                                => linear(x, b; epilogue residual) -> [s, a]
// - prologue: rms_norm(s) -> y; linear(y)                                 => linear(s; prologue rms_norm) -> [..., y]
//             add_rms_norm(a, b) -> [s, y]; linear(y)                     => linear(a, b; prologue add_rms_norm) -> [..., s, y]
//
// The values the fused op no longer needs for decode rows (h, a, y) stay as its last outputs: the CUDA
// backend computes prefill and mixed steps (many rows, where a GEMM and separate kernels are faster) as
// the ops did before, through exactly those buffers, so the memory plan and the numerics are unchanged.
// A fused linear names its extra outputs by position; runtime/op_specs.cpp (spec::linear) reads them.
import type { Graph } from '../graph';
import type { LoweredOp, LoweredProgram } from './index';

const ROPE_ATTRS = ['numHeads', 'headDim', 'rotaryDim', 'interleaved', 'attentionScaling'];

/** Returns the number of ops fused away. */
export function fuseLinearNeighbours(program: LoweredProgram, graph: Graph): number {
  const before = program.ops.length;
  const rootOf = (id: number) => program.views.get(id)?.of ?? id;
  const graphOutputs = new Set(Object.values(graph.outputs).map(rootOf));
  const readersOf = (root: number) => program.ops.filter((op) => op.inputs.some((id) => rootOf(id) === root));
  // Only bfloat16, int8, int4 and FP8 matrices have the fused kernel (kernels/gemv.cu; the quantized ones
  // at batch 1); the others (float32, float16) would run the separate kernels anyway.
  const fusable = (op: LoweredOp) =>
    ['bfloat16', 'int8', 'int4', 'float8_e4m3fn'].includes(program.weights[op.weights.weight]?.dtype ?? '');
  const plainLinear = (op: LoweredOp) =>
    op.op === 'linear' && fusable(op) && op.outputs.length === 1 && op.attrs.epilogue === undefined && op.attrs.prologue === undefined &&
    !program.views.has(op.outputs[0]) && !graphOutputs.has(op.outputs[0]);
  const viewAt = (id: number, of: number, colOffset: number, cols: number) => {
    const view = program.views.get(id);
    return view !== undefined && view.of === of && view.colOffset === colOffset && graph.features(id) === cols;
  };
  const remove = (...gone: LoweredOp[]) => {
    program.ops = program.ops.filter((op) => !gone.includes(op));
  };

  // Epilogues on the producing linear first (rope, swiglu), then the residual, then norm prologues, so
  // that a QKV or gate/up linear can take both a prologue and an epilogue.
  for (const linear of [...program.ops]) {
    if (!plainLinear(linear)) continue;
    const h = linear.outputs[0];
    const N = graph.features(h);
    const readers = readersOf(h);
    const ropes = readers.filter((op) => op.op === 'rope');
    if (ropes.length === 2) {
      const [q, k] = program.views.get(ropes[0].inputs[0])?.colOffset === 0 ? ropes : [ropes[1], ropes[0]];
      const attrsMatch = [q, k].every(
        (op) => Object.keys(op.attrs).every((key) => ROPE_ATTRS.includes(key)) && Object.keys(op.weights).join() === 'invFreq',
      );
      const same = (key: string) => q.attrs[key] === k.attrs[key];
      const headDim = Number(q.attrs.headDim);
      const qCols = Number(q.attrs.numHeads) * headDim;
      const kCols = Number(k.attrs.numHeads) * headDim;
      const rest = headDim - Number(q.attrs.rotaryDim);
      if (
        attrsMatch && ['headDim', 'rotaryDim', 'interleaved', 'attentionScaling'].every(same) &&
        q.weights.invFreq === k.weights.invFreq && rest % 2 === 0 && (N - qCols - kCols) % 2 === 0 &&
        viewAt(q.inputs[0], h, 0, qCols) && viewAt(k.inputs[0], h, qCols, kCols) &&
        // Every other reader reads only the rest of h (v).
        readers.every((op) => op === q || op === k || op.inputs.every((id) => rootOf(id) !== h || (program.views.get(id)?.colOffset ?? 0) >= qCols + kCols))
      ) {
        linear.outputs = [q.outputs[0], k.outputs[0], h];
        linear.attrs = {
          ...linear.attrs,
          epilogue: 'rope',
          numHeads: q.attrs.numHeads,
          numKvHeads: k.attrs.numHeads,
          headDim,
          rotaryDim: q.attrs.rotaryDim,
          interleaved: q.attrs.interleaved ?? false,
          attentionScaling: q.attrs.attentionScaling ?? 1,
        };
        linear.weights = { ...linear.weights, invFreq: q.weights.invFreq };
        // The attention that reads q', k' and v lets the linear store the step's K and V rows into the
        // cache (in its epilogue for decode rows, else with the same store kernel), one kernel less.
        const vId = readers.find((op) => op.op === 'attention')?.inputs[2];
        const attentions = program.ops.filter((op) => op.op === 'attention' && op.inputs[0] === q.outputs[0]);
        if (attentions.length === 1 && attentions[0].inputs[1] === k.outputs[0] && attentions[0].inputs[2] === vId &&
            readersOf(k.outputs[0]).length === 1 && attentions[0].attrs.llamaCppF16 === undefined) {
          linear.attrs.kvLayer = attentions[0].attrs.layer;
          attentions[0].attrs = { ...attentions[0].attrs, kvStored: true };
        }
        remove(q, k);
        continue;
      }
    }
    if (readers.length === 1 && readers[0].op === 'swiglu' && N % 2 === 0) {
      const swiglu = readers[0];
      if (viewAt(swiglu.inputs[0], h, 0, N / 2) && viewAt(swiglu.inputs[1], h, N / 2, N / 2)) {
        linear.outputs = [swiglu.outputs[0], h];
        linear.attrs = { ...linear.attrs, epilogue: 'swiglu' };
        remove(swiglu);
        continue;
      }
    }
    // (An add_rms_norm after the linear stays: it becomes the next linear's prologue, whose separate-kernel
    // form is then the one fused kernel it was, for prefill and large batches.)
    const add = readers.length === 1 && readers[0].op === 'add' ? readers[0] : undefined;
    if (add && add.inputs.length === 2 && add.inputs.indexOf(h) === add.inputs.lastIndexOf(h)) {
      const residual = add.inputs[1 - add.inputs.indexOf(h)];
      const [sum] = add.outputs;
      linear.inputs = [linear.inputs[0], residual];
      linear.outputs = [sum, h];
      linear.attrs = { ...linear.attrs, epilogue: 'residual' };
      remove(add);
    }
  }

  for (const norm of [...program.ops]) {
    const add = norm.op === 'add_rms_norm';
    if ((norm.op !== 'rms_norm' && !add) || norm.attrs.groupSize !== undefined) continue;
    const y = norm.outputs[norm.outputs.length - 1];
    if (graphOutputs.has(y) || program.views.has(y)) continue;
    const readers = readersOf(y);
    if (readers.length !== 1) continue;
    const linear = readers[0];
    if (linear.op !== 'linear' || !fusable(linear) || linear.attrs.prologue !== undefined || linear.inputs[0] !== y || linear.inputs.lastIndexOf(y) !== 0) continue;
    // The sum becomes the linear's output: nothing between the two may read it.
    const between = program.ops.slice(program.ops.indexOf(norm) + 1, program.ops.indexOf(linear));
    if (add && between.some((op) => op.inputs.some((id) => rootOf(id) === norm.outputs[0]))) continue;
    linear.inputs = [...norm.inputs, ...linear.inputs.slice(1)];
    linear.outputs = [...linear.outputs, ...norm.outputs];
    linear.attrs = { ...linear.attrs, prologue: norm.op, normEps: norm.attrs.eps, normWeightOffset: norm.attrs.weightOffset ?? 0 };
    linear.weights = { ...linear.weights, normWeight: norm.weights.weight };
    remove(norm);
  }
  return before - program.ops.length;
}

/** The value a linear's GEMM reads: its input, or with a norm prologue the normed copy (its last output). */
export function gemmInputOf(op: LoweredOp): number {
  return op.op === 'linear' && op.attrs.prologue !== undefined ? op.outputs[op.outputs.length - 1] : op.inputs[0];
}
