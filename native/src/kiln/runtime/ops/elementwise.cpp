// add, mul, silu, swiglu: elementwise over matrices of one shape (same rows kind, same cols).
#include "kiln/runtime/ops/ops.h"

namespace kiln {
namespace ops {

namespace {

using BinaryKernel = void (*)(const KernelEnv&, const float*, int64_t, const float*, int64_t, int64_t, int64_t,
                              float*, int64_t);

BoundOp bindBinary(OpBinding& b, BinaryKernel kernel) {
  b.expectArity(2, 1);
  const ValueRef& a = b.input(0);
  const ValueRef& c = b.input(1);
  const ValueRef& out = b.output(0);
  b.expectRows(c, a.rows, "input 1");
  b.expectCols(c, a.cols, "input 1");
  b.expectRows(out, a.rows, "output 0");
  b.expectCols(out, a.cols, "output 0");
  const ValueRef shape = a;
  const float* x = a.data;
  const int64_t xs = a.rowStride;
  const float* z = c.data;
  const int64_t zs = c.rowStride;
  float* y = out.data;
  const int64_t ys = out.rowStride;
  return [=](const StepRuntime& rt) { kernel(rt.env, x, xs, z, zs, shape.numRows(*rt.step), shape.cols, y, ys); };
}

}  // namespace

BoundOp bindAdd(OpBinding& b) { return bindBinary(b, addKernel); }
BoundOp bindMul(OpBinding& b) { return bindBinary(b, mulKernel); }
BoundOp bindSwiglu(OpBinding& b) { return bindBinary(b, swigluKernel); }

BoundOp bindSilu(OpBinding& b) {
  b.expectArity(1, 1);
  const ValueRef& a = b.input(0);
  const ValueRef& out = b.output(0);
  b.expectRows(out, a.rows, "output 0");
  b.expectCols(out, a.cols, "output 0");
  const ValueRef shape = a;
  const float* x = a.data;
  const int64_t xs = a.rowStride;
  float* y = out.data;
  const int64_t ys = out.rowStride;
  return [=](const StepRuntime& rt) { siluKernel(rt.env, x, xs, shape.numRows(*rt.step), shape.cols, y, ys); };
}

}  // namespace ops
}  // namespace kiln
