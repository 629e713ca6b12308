// Activation memory planning: every buffer an op writes gets a fixed offset in one arena, sized for the
// largest step the engine accepts (maxNumTokens packed tokens, or maxLogitRows rows after the gather).
// Buffers whose lifetimes do not overlap share bytes, so the arena holds a few layers' worth of
// activations rather than the whole network's. Each buffer has an element type (float32 unless
// `dtypes` says otherwise; see activation-dtypes.ts), and its column views share it.
import type { Graph } from './graph';
import type { LoweredProgram } from './lower';

export type RowKind = 'tokens' | 'logitRows';
export type ActivationDType = 'float32' | 'float16' | 'bfloat16';

const ELEMENT_BYTES: Record<ActivationDType, number> = { float32: 4, float16: 2, bfloat16: 2 };

export interface PlannedValue {
  name: string;
  rows: RowKind;
  cols: number;
  /** Byte offset of element (0, 0) in the arena. */
  offset: number;
  /** Elements between consecutive rows (> cols for a column slice of a wider buffer). */
  rowStride: number;
  /** Element type; absent means float32 (the only type of CPU engines). */
  dtype?: Exclude<ActivationDType, 'float32'>;
}

export interface MemoryPlan {
  values: PlannedValue[];
  /** Graph value id -> index into `values`. */
  index: Map<number, number>;
  arenaBytes: number;
  /** Bytes the buffers would take without reuse, for the build report. */
  unsharedBytes: number;
}

const ALIGNMENT = 64;
const align = (n: number) => Math.ceil(n / ALIGNMENT) * ALIGNMENT;

interface Buffer {
  id: number;
  rows: RowKind;
  cols: number;
  dtype: ActivationDType;
  bytes: number;
  firstOp: number;
  lastOp: number;
  offset: number;
}

/** `dtypes`: element type of the buffers (root values) that are not float32. */
export function planMemory(
  graph: Graph,
  program: LoweredProgram,
  maxRows: Record<RowKind, number>,
  dtypes: ReadonlyMap<number, ActivationDType> = new Map(),
): MemoryPlan {
  const rootOf = (id: number) => program.views.get(id)?.of ?? id;
  const buffers = new Map<number, Buffer>();
  program.ops.forEach((op, index) => {
    for (const id of op.outputs) {
      if (program.views.has(id)) throw new Error(`memory plan: op ${op.op} writes into a view`);
      if (buffers.has(id)) throw new Error(`memory plan: value %${id} is written twice`);
      const shape = graph.value(id).shape;
      const rows = shape[0];
      if (rows !== 'tokens' && rows !== 'logitRows') throw new Error(`memory plan: value %${id} has rows ${String(rows)}`);
      const cols = graph.features(id);
      const dtype = dtypes.get(id) ?? 'float32';
      const bytes = align(maxRows[rows] * cols * ELEMENT_BYTES[dtype]);
      buffers.set(id, { id, rows, cols, dtype, bytes, firstOp: index, lastOp: index, offset: -1 });
    }
  });
  program.ops.forEach((op, index) => {
    for (const id of op.inputs) {
      const buffer = buffers.get(rootOf(id));
      if (!buffer) throw new Error(`memory plan: op ${op.op} reads %${id}, which no earlier op writes`);
      buffer.lastOp = Math.max(buffer.lastOp, index);
    }
  });
  for (const id of Object.values(graph.outputs)) {
    const buffer = buffers.get(rootOf(id));
    if (buffer) buffer.lastOp = program.ops.length;
  }

  // Greedy by size (largest first): each buffer takes the lowest offset that does not collide with an
  // already placed buffer whose lifetime overlaps its own.
  const placed: Buffer[] = [];
  const bySize = [...buffers.values()].sort((a, b) => b.bytes - a.bytes || a.firstOp - b.firstOp);
  for (const buffer of bySize) {
    const overlapping = placed
      .filter((other) => other.firstOp <= buffer.lastOp && buffer.firstOp <= other.lastOp)
      .sort((a, b) => a.offset - b.offset);
    let offset = 0;
    for (const other of overlapping) {
      if (offset + buffer.bytes <= other.offset) break;
      offset = Math.max(offset, other.offset + other.bytes);
    }
    buffer.offset = offset;
    placed.push(buffer);
  }

  const values: PlannedValue[] = [];
  const index = new Map<number, number>();
  const name = (id: number) => graph.value(id).name ?? `%${id}`;
  const typed = (dtype: ActivationDType) => (dtype === 'float32' ? {} : { dtype });
  for (const buffer of [...buffers.values()].sort((a, b) => a.firstOp - b.firstOp || a.id - b.id)) {
    index.set(buffer.id, values.length);
    values.push({ name: name(buffer.id), rows: buffer.rows, cols: buffer.cols, offset: buffer.offset, rowStride: buffer.cols, ...typed(buffer.dtype) });
  }
  for (const [id, view] of program.views) {
    const root = buffers.get(view.of);
    if (!root) continue; // a slice nobody lowered reads
    index.set(id, values.length);
    values.push({
      name: name(id),
      rows: root.rows,
      cols: graph.features(id),
      offset: root.offset + ELEMENT_BYTES[root.dtype] * view.colOffset,
      rowStride: root.cols,
      ...typed(root.dtype),
    });
  }
  return {
    values,
    index,
    arenaBytes: Math.max(ALIGNMENT, ...placed.map((b) => b.offset + b.bytes)),
    unsharedBytes: placed.reduce((sum, b) => sum + b.bytes, 0),
  };
}
