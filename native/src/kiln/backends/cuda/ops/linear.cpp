// linear: a cuBLASLt GEMM with a float32 bias epilogue, over token rows or logit rows, or Kiln's GEMV for
// decode rows (gemm.cpp); int8 weight-only matrices through gemv_int8.cu, FP8 ones through fp8.cu. Its input is of the weight's dtype in the engines Kiln builds
// (activation-dtypes.ts); any other input is converted into scratch first, so every well-formed header
// runs. With KILN_CUDA_FUSE_NORM=1, when the op bound just before is the add_rms_norm that makes this
// linear's input, decode rows run both in one kernel (gemvAddRmsNorm) and the norm op skips those rows.
#include <algorithm>
#include <cstdlib>
#include <string>

#include "kiln/backends/cuda/ops/ops.h"

namespace kiln {
namespace cuda {
namespace ops {

namespace {

// The bytes a value's first `rows` rows span in the arena.
struct Span {
  int64_t begin, end;
};
Span spanOf(const ValueRef& v, int64_t rows) {
  const int64_t element = static_cast<int64_t>(dtypeSize(v.dtype));
  return {v.byteOffset, v.byteOffset + ((rows - 1) * v.rowStride + v.cols) * element};
}
bool overlap(Span x, Span y) { return x.begin < y.end && y.begin < x.end; }

// How many decode rows this linear can take over from the norm before it (0: none). The fused kernel
// reads a and b in every block while block 0 writes sum and y and every block writes the output, so
// nothing it writes may share bytes with what it reads.
int64_t rowsFusedWithNorm(CudaBackend& be, const CudaBackend::NormForLinear& n, const spec::Linear& s) {
  // Off unless KILN_CUDA_FUSE_NORM=1: measured on an H200 (TinyLlama shape, batch 1) it made decode
  // slower, 1.89 against 1.48 ms/token: every block of the GEMV repeats the norm's two passes over the
  // residual before it can use its weights (docs/benchmarks.md).
  static const bool enabled = [] {
    const char* setting = std::getenv("KILN_CUDA_FUSE_NORM");
    return setting && std::string(setting) == "1";
  }();
  if (!enabled || !be.gemm().gemvEnabled()) return 0;
  if (n.y.byteOffset != s.x.byteOffset || n.y.dtype != s.x.dtype || n.y.rowStride != s.x.rowStride) return 0;
  if (s.x.dtype != s.dtype || n.H != s.K || n.y.cols != s.K) return 0;
  int64_t rows = 0;
  for (int64_t r = kMaxGemvRows; r >= 1 && rows == 0; --r) {
    if (gemvAddRmsNormApplies(s.dtype, r, s.weight, s.K)) rows = r;
  }
  if (rows == 0) return 0;
  const Span reads[] = {spanOf(n.a, rows), spanOf(n.b, rows)};
  const Span writes[] = {spanOf(n.sum, rows), spanOf(n.y, rows), spanOf(s.y, rows)};
  for (const Span& w : writes) {
    for (const Span& r : reads) {
      if (overlap(w, r)) return 0;
    }
  }
  if (overlap(writes[2], writes[0]) || overlap(writes[2], writes[1])) return 0;
  return rows;
}

}  // namespace

// An int8 weight-only linear (W8A16): decode rows through gemvInt8; more rows through the codes widened to
// the input's dtype in scratch, a cuBLASLt GEMM, then the scales and bias (kernels.h).
BoundOp bindInt8Linear(OpBinding& b, const spec::Linear& s) {
  CudaBackend* be = &backendOf(b);
  const Matrix x = be->value(s.x);
  const Matrix y = be->value(s.y);
  if (x.dtype != DType::F32 && x.dtype != DType::F16 && x.dtype != DType::BF16) {
    b.fail("input 0 of an int8 linear must be float32, float16 or bfloat16, not " + std::string(dtypeName(x.dtype)));
  }
  be->reserveScratch(static_cast<size_t>(s.N * s.K) * dtypeSize(x.dtype));
  return [=](const StepRuntime& rt) {
    const int64_t rows = s.x.numRows(*rt.step);
    if (rows <= 0) return;
    if (be->gemm().gemvEnabled() && gemvInt8Applies(x.dtype, x.data, rows, x.stride, s.weight, s.K)) {
      gemvInt8(be->stream(), x.dtype, x.data, rows, x.stride, s.weight, s.N, s.K, s.bias, y);
      return;
    }
    widenInt8(be->stream(), s.weight, s.N, s.K, x.dtype, be->scratch());
    be->gemm().linear(x.dtype, x.data, rows, x.stride, be->scratch(), s.N, s.K, nullptr, y.dtype, y.data, y.stride);
    scaleColumns(be->stream(), y, rows, s.N, s.weight, s.K, s.bias);
  };
}

// An int4 weight-only linear (W4A16, decision 0014): decode rows through gemvInt4; more rows through the
// matrix dequantized to the input's dtype in scratch and a cuBLASLt GEMM with the bias epilogue.
BoundOp bindInt4Linear(OpBinding& b, const spec::Linear& s) {
  CudaBackend* be = &backendOf(b);
  const Matrix x = be->value(s.x);
  const Matrix y = be->value(s.y);
  if (x.dtype != DType::F32 && x.dtype != DType::F16 && x.dtype != DType::BF16) {
    b.fail("input 0 of an int4 linear must be float32, float16 or bfloat16, not " + std::string(dtypeName(x.dtype)));
  }
  be->reserveScratch(static_cast<size_t>(s.N * s.K) * dtypeSize(x.dtype));
  return [=](const StepRuntime& rt) {
    const int64_t rows = s.x.numRows(*rt.step);
    if (rows <= 0) return;
    if (be->gemm().gemvEnabled() && gemvInt4Applies(x.dtype, x.data, rows, x.stride, s.weight, s.K)) {
      gemvInt4(be->stream(), x.dtype, x.data, rows, x.stride, s.weight, s.N, s.K, s.groupSize, s.bias, y);
      return;
    }
    dequantizeInt4(be->stream(), s.weight, s.N, s.K, s.groupSize, x.dtype, be->scratch());
    be->gemm().linear(x.dtype, x.data, rows, x.stride, be->scratch(), s.N, s.K, s.bias, y.dtype, y.data, y.stride);
  };
}

// An FP8 linear (decision 0015): decode rows through gemvFp8, which quantizes them itself; more rows
// through quantizeRowsFp8 into scratch, cuBLASLt's FP8 GEMM into float32 scratch, then fp8Epilogue.
BoundOp bindFp8Linear(OpBinding& b, const spec::Linear& s) {
  CudaBackend* be = &backendOf(b);
  const Matrix x = be->value(s.x);
  const Matrix y = be->value(s.y);
  if (x.dtype != DType::F32 && x.dtype != DType::F16 && x.dtype != DType::BF16) {
    b.fail("input 0 of a float8_e4m3fn linear must be float32, float16 or bfloat16, not " + std::string(dtypeName(x.dtype)));
  }
  // cuBLASLt's FP8 GEMM needs 16-byte rows; the builder keeps other matrices 16-bit.
  if (s.K % 16 != 0) b.fail("a float8_e4m3fn weight needs K to be a multiple of 16, got " + std::to_string(s.K));
  // Scratch: the codes [chunk, K], the row scales, the float32 products [chunk, ldAcc], each 256-byte
  // aligned. Rows go in chunks so that the products take at most 64 MB (a whole prefill of a wide MLP
  // would take hundreds).
  const auto align = [](int64_t v) { return (v + 255) / 256 * 256; };
  const int64_t ldAcc = (s.N + 15) / 16 * 16;
  // KILN_CUDA_FP8_CHUNK_ROWS (read at load) makes chunks smaller, so tests cover several on tiny models.
  int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(maxRowsOf(b, s.x), (int64_t{64} << 20) / (ldAcc * 4)));
  if (const char* setting = std::getenv("KILN_CUDA_FP8_CHUNK_ROWS")) {
    const long long wanted = std::atoll(setting);
    if (wanted > 0 && wanted < chunk) chunk = static_cast<int64_t>(wanted);
  }
  const int64_t scalesAt = align(chunk * s.K);
  const int64_t accAt = scalesAt + align(chunk * 4);
  be->reserveScratch(static_cast<size_t>(accAt + chunk * ldAcc * 4));
  prepareFp8Kernels();
  const int64_t xElement = static_cast<int64_t>(dtypeSize(x.dtype)), yElement = static_cast<int64_t>(dtypeSize(y.dtype));
  return [=](const StepRuntime& rt) {
    const int64_t rows = s.x.numRows(*rt.step);
    if (rows <= 0) return;
    if (be->gemm().gemvEnabled() && gemvFp8Applies(x.dtype, x.data, rows, x.stride, s.weight, s.K)) {
      gemvFp8(be->stream(), x.dtype, x.data, rows, x.stride, s.weight, s.N, s.K, s.bias, y);
      return;
    }
    char* scratch = static_cast<char*>(be->scratch());
    float* aScale = reinterpret_cast<float*>(scratch + scalesAt);
    float* acc = reinterpret_cast<float*>(scratch + accAt);
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
      const int64_t n = std::min(chunk, rows - r0);
      const void* xr = static_cast<const char*>(x.data) + r0 * x.stride * xElement;
      const Matrix yr{static_cast<char*>(y.data) + r0 * y.stride * yElement, y.dtype, y.stride};
      quantizeRowsFp8(be->stream(), x.dtype, xr, n, x.stride, s.K, scratch, s.K, aScale);
      be->gemm().linear(DType::F8E4M3, scratch, n, s.K, s.weight, s.N, s.K, nullptr, DType::F32, acc, ldAcc);
      fp8Epilogue(be->stream(), acc, ldAcc, n, s.N, aScale, s.weight, s.K, s.bias, yr);
    }
  };
}

BoundOp bindLinear(OpBinding& b) {
  const spec::Linear s = spec::linear(b);
  if (s.dtype == DType::I8) return bindInt8Linear(b, s);
  if (s.dtype == DType::F8E4M3) return bindFp8Linear(b, s);
  if (s.dtype == DType::I4) return bindInt4Linear(b, s);
  CudaBackend* be = &backendOf(b);
  const Matrix x = be->value(s.x);
  const Matrix y = be->value(s.y);
  if (s.dtype == DType::F32 && y.dtype != DType::F32) {
    b.fail("output 0 is " + std::string(dtypeName(y.dtype)) + " but a float32 weight's GEMM writes float32");
  }
  const bool convert = x.dtype != s.dtype;
  if (convert) be->reserveScratch(static_cast<size_t>(maxRowsOf(b, s.x) * s.K) * dtypeSize(s.dtype));

  int64_t fusedRows = 0;
  NormPrologue norm{ConstMatrix(nullptr, DType::F32, 0), ConstMatrix(nullptr, DType::F32, 0), Matrix{}, Matrix{},
                    nullptr, DType::F32, 0.0f, 0.0f};
  if (const CudaBackend::NormForLinear* n = be->normForLinear(); n && !convert) {
    fusedRows = rowsFusedWithNorm(*be, *n, s);
    if (fusedRows > 0) {
      *n->linearTakesRows = fusedRows;
      norm = NormPrologue{be->value(n->a), be->value(n->b), be->value(n->sum), be->value(n->y), n->w, n->wDType, n->eps,
                          n->weightOffset};
    }
  }
  return [=](const StepRuntime& rt) {
    const int64_t rows = s.x.numRows(*rt.step);
    if (rows <= fusedRows) {
      if (rows > 0) gemvAddRmsNorm(be->stream(), s.dtype, norm, rows, s.weight, s.N, s.K, s.bias, y);
      return;
    }
    Matrix in = x;
    if (convert) {
      in = Matrix{be->scratch(), s.dtype, s.K};
      elementwise(be->stream(), Elementwise::Copy, x, x, rows, s.K, 0.0f, in);
    }
    be->gemm().linear(s.dtype, in.data, rows, in.stride, s.weight, s.N, s.K, s.bias, y.dtype, y.data, y.stride);
  };
}

}  // namespace ops
}  // namespace cuda
}  // namespace kiln
