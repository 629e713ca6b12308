import type {
  ArchitectureDefinition,
  BaseModelConfig,
  CheckpointDType,
  CheckpointTensorPlan,
  HfTensorSource,
} from '@kiln/models';
import type { TensorWriteSpec } from '@kiln/native';
import { ConvertError } from './errors';
import { formatShape } from './json-file';
import type { HfTensor } from './weights';

/** Source dtypes the native writer can cast from. Integer or quantized tensors are not weights we convert. */
const CONVERTIBLE_SOURCE_DTYPES = new Set(['F32', 'F16', 'BF16']);

function product(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** A planning bug in the architecture definition, not a problem of the user's files. */
function planError(arch: ArchitectureDefinition<BaseModelConfig>, tensor: string, detail: string): Error {
  return new Error(`architecture ${arch.name}: checkpoint tensor ${JSON.stringify(tensor)}: ${detail}`);
}

/** Elements one source contributes after its transpose and row slice; checks the slice against the shape. */
function sourceElements(
  arch: ArchitectureDefinition<BaseModelConfig>,
  plan: CheckpointTensorPlan,
  source: HfTensorSource,
): number {
  let shape = source.shape;
  if (source.transpose) {
    if (shape.length !== 2) throw planError(arch, plan.name, `cannot transpose ${source.tensor} of shape ${formatShape(shape)}`);
    shape = [shape[1], shape[0]];
  }
  if (source.rowStart === undefined && source.rowCount === undefined) return product(shape);
  if (shape.length === 0) throw planError(arch, plan.name, `cannot slice the scalar ${source.tensor}`);
  const rows = shape[0];
  const start = source.rowStart ?? 0;
  const count = source.rowCount ?? rows - start;
  if (!Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0 || start + count > rows) {
    throw planError(arch, plan.name, `rows [${start}, ${start + count}) are outside ${source.tensor}'s ${rows} rows`);
  }
  return count * product(shape.slice(1));
}

export interface PlanInput {
  arch: ArchitectureDefinition<BaseModelConfig>;
  modelConfig: BaseModelConfig;
  /** Every tensor of the HF checkpoint, by name. */
  tensors: Map<string, HfTensor>;
  dtype: CheckpointDType;
  /** For messages. */
  modelDir: string;
}

/**
 * Matches the architecture's checkpoint plan against the HF tensors and returns what the native writer
 * gathers into `rank0.safetensors`. Fails on the first missing tensor, wrong shape or unsupported dtype,
 * and on any HF tensor that the plan leaves unused (unless the architecture ignores it): a tensor we do
 * not understand means the config and the weights disagree, and silently dropping it would build a
 * different model than the one the user has.
 */
export function planConversion({ arch, modelConfig, tensors, dtype, modelDir }: PlanInput): TensorWriteSpec[] {
  const plans = arch.checkpointTensors(modelConfig);
  const used = new Set<string>();
  const names = new Set<string>();
  const specs: TensorWriteSpec[] = [];

  const missing = plans.flatMap((plan) => plan.sources.filter((source) => !tensors.has(source.tensor)));
  if (missing.length > 0) {
    const first = missing[0];
    const more = missing.length > 1 ? ` (and ${missing.length - 1} more missing)` : '';
    throw new ConvertError(
      modelDir,
      `missing tensor ${JSON.stringify(first.tensor)} (expected shape ${formatShape(first.shape)})${more}`,
    );
  }

  for (const plan of plans) {
    if (names.has(plan.name)) throw planError(arch, plan.name, 'planned twice');
    names.add(plan.name);
    if (plan.sources.length === 0) throw planError(arch, plan.name, 'has no sources');
    let elements = 0;
    for (const source of plan.sources) {
      const found = tensors.get(source.tensor)!;
      if (!sameShape(found.info.shape, source.shape)) {
        throw new ConvertError(
          found.file,
          `tensor ${JSON.stringify(source.tensor)} has shape ${formatShape(found.info.shape)} ` +
            `but the config implies ${formatShape(source.shape)}`,
        );
      }
      if (!CONVERTIBLE_SOURCE_DTYPES.has(found.info.dtype)) {
        throw new ConvertError(
          found.file,
          `tensor ${JSON.stringify(source.tensor)} has dtype ${found.info.dtype}; only F32, F16 and BF16 weights can be converted`,
        );
      }
      elements += sourceElements(arch, plan, source);
      used.add(source.tensor);
    }
    if (elements !== product(plan.shape)) {
      throw planError(arch, plan.name, `its sources hold ${elements} elements but its shape ${formatShape(plan.shape)} needs ${product(plan.shape)}`);
    }
    specs.push({
      name: plan.name,
      dtype,
      shape: [...plan.shape],
      sources: plan.sources.map((source) => ({
        file: tensors.get(source.tensor)!.file,
        tensor: source.tensor,
        ...(source.transpose ? { transpose: true } : {}),
        ...(source.rowStart !== undefined ? { rowStart: source.rowStart } : {}),
        ...(source.rowCount !== undefined ? { rowCount: source.rowCount } : {}),
      })),
    });
  }

  const ignored = arch.ignoredTensors ?? [];
  const unexpected = [...tensors.entries()].filter(
    ([name]) => !used.has(name) && !ignored.some((pattern) => matchesWhole(pattern, name)),
  );
  if (unexpected.length > 0) {
    const [name, { file, info }] = unexpected[0];
    const more = unexpected.length > 1 ? ` (and ${unexpected.length - 1} more unexpected tensors)` : '';
    throw new Error(
      `unexpected tensor ${JSON.stringify(name)} ${formatShape(info.shape)} in ${file}: ` +
        `not part of ${arch.name} with this config${more}`,
    );
  }
  return specs;
}

/** RegExp.test without the `lastIndex` surprise of global/sticky patterns. */
function matchesWhole(pattern: RegExp, name: string): boolean {
  pattern.lastIndex = 0;
  return pattern.test(name);
}
