export * from './types';
export { buildEngine, BUILDER_VERSION, ENGINE_DIR_FORMAT, ENGINE_FILE } from './build';
export { defaultComputeCapability, FALLBACK_COMPUTE_CAPABILITY, resolveBuildConfig, resolveModelBuildConfig } from './build-config';
export { Graph, type GraphNode, type GraphValue } from './graph';
export { runPasses, passes, removeDeadNodes, fuseSiblingLinears, fuseSwiglu, fuseGeglu, fuseAddNorm, type PassReport } from './passes';
export { fusedName } from './passes/fuse-sibling-linears';
export { lowerGraph, registerCpuLowering, type LoweredProgram, type LoweredOp, type Lowering, type WeightEntry } from './lower';
export { planMemory, type MemoryPlan, type PlannedValue } from './memory-plan';
export { assembleEngine, engineTarget, ENGINE_FORMAT_VERSION, type EngineHeader, type EngineTarget } from './engine-header';
