// Bindings to single kernels, for the tests that compare them with scalar references.
// Owned by the kernels: see native/src/addon/testing.cpp.
export interface NativeTesting {
  [kernel: string]: (...args: never[]) => unknown;
}
