// linear: a cuBLASLt GEMM with a float32 bias epilogue, over token rows or logit rows, or Kiln's GEMV for
// decode rows (gemm.cpp); int8 weight-only matrices through gemv_int8.cu, int4 through gemv_int4.cu, FP8
// ones through fp8.cu. Its input is of the weight's dtype in the engines Kiln builds
// (activation-dtypes.ts); any other input is converted into scratch first, so every well-formed header
// runs. A linear with fused neighbours (an RMSNorm prologue; a residual, SwiGLU or rope epilogue: see
// spec::Linear) runs as one gemvFused kernel for decode rows of bfloat16 weights, and otherwise as the
// separate kernels the unfused ops would have run, through the op's extra outputs.
#include <algorithm>
#include <cstdlib>
#include <string>

#include "kiln/backends/cuda/ops/ops.h"

namespace kiln {
namespace cuda {
namespace ops {

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
    if (be->gemm().gemvEnabled() && gemvQuantizedApplies(DType::I8, x.dtype, x.data, rows, s.weight, s.K, 0)) {
      gemvQuantized(be->stream(), DType::I8, x.data, s.weight, s.N, s.K, 0, s.bias, y);
      return;
    }
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
    if (be->gemm().gemvEnabled() && gemvQuantizedApplies(DType::I4, x.dtype, x.data, rows, s.weight, s.K, s.groupSize)) {
      gemvQuantized(be->stream(), DType::I4, x.data, s.weight, s.N, s.K, s.groupSize, s.bias, y);
      return;
    }
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

namespace {

// A bfloat16 / float16 / float32 matrix: cuBLASLt, or the GEMV for decode rows (gemm.cpp).
BoundOp bindDenseLinear(OpBinding& b, const spec::Linear& s) {
  CudaBackend* be = &backendOf(b);
  const Matrix x = be->value(s.x);
  const Matrix y = be->value(s.y);
  if (s.dtype == DType::F32 && y.dtype != DType::F32) {
    b.fail("output 0 is " + std::string(dtypeName(y.dtype)) + " but a float32 weight's GEMM writes float32");
  }
  const bool convert = x.dtype != s.dtype;
  if (convert) be->reserveScratch(static_cast<size_t>(maxRowsOf(b, s.x) * s.K) * dtypeSize(s.dtype));
  return [=](const StepRuntime& rt) {
    const int64_t rows = s.x.numRows(*rt.step);
    if (rows <= 0) return;
    Matrix in = x;
    if (convert) {
      in = Matrix{be->scratch(), s.dtype, s.K};
      elementwise(be->stream(), Elementwise::Copy, x, x, rows, s.K, 0.0f, in);
    }
    be->gemm().linear(s.dtype, in.data, rows, in.stride, s.weight, s.N, s.K, s.bias, y.dtype, y.data, y.stride);
  };
}

// x -> y through the matrix, whatever its dtype.
BoundOp bindGemm(OpBinding& b, const spec::Linear& s) {
  if (s.dtype == DType::I8) return bindInt8Linear(b, s);
  if (s.dtype == DType::F8E4M3) return bindFp8Linear(b, s);
  if (s.dtype == DType::I4) return bindInt4Linear(b, s);
  return bindDenseLinear(b, s);
}

// Columns [from, from + cols) of m.
Matrix columns(const Matrix& m, int64_t from) {
  return Matrix{static_cast<char*>(m.data) + from * static_cast<int64_t>(dtypeSize(m.dtype)), m.dtype, m.stride};
}

bool ropeQkvFused() {
  static const bool fused = [] {
    const char* setting = std::getenv("KILN_CUDA_ROPE_QKV");
    return !(setting && std::string(setting) == "0");
  }();
  return fused;
}

BoundOp bindFusedLinear(OpBinding& b, const spec::Linear& s) {
  CudaBackend* be = &backendOf(b);
  spec::Linear inner = s;
  inner.x = s.gemmIn();
  inner.y = s.gemmOut();
  inner.normPrologue = false;
  inner.epilogue = spec::Linear::Epilogue::None;
  const BoundOp gemm = bindGemm(b, inner);

  const Matrix x = be->value(s.x), y = be->value(s.y);
  const Matrix normed = s.normPrologue ? be->value(s.normed) : Matrix{};
  const Matrix product = s.epilogue != spec::Linear::Epilogue::None ? be->value(s.product) : Matrix{};
  GemvFusion f;
  if (s.normPrologue) {
    f.normWeight = s.normWeight;
    f.normWDType = s.normWDType;
    f.normEps = s.normEps;
    f.normWeightOffset = s.normWeightOffset;
  }
  if (s.addPrologue) {
    f.addend = be->value(s.addend);
    f.sum = be->value(s.sum);
  }
  const int64_t qCols = s.numHeads * s.headDim, kCols = s.numKvHeads * s.headDim;
  RopeTable table;
  switch (s.epilogue) {
    case spec::Linear::Epilogue::Residual:
      f.epilogue = GemvFusion::Residual;
      f.residual = be->value(s.residual);
      break;
    case spec::Linear::Epilogue::Swiglu:
      f.epilogue = GemvFusion::Swiglu;
      break;
    case spec::Linear::Epilogue::Rope:
      f.epilogue = GemvFusion::Rope;
      f.ropedK = be->value(s.ropedK);
      f.v = columns(product, qCols + kCols);
      f.qCols = qCols;
      f.kCols = kCols;
      f.headDim = s.headDim;
      f.rotaryDim = s.rotaryDim;
      f.interleaved = s.interleaved;
      f.invFreq = s.invFreq;
      f.attentionScaling = s.attentionScaling;
      table = ropeTable(b, s.invFreq, s.rotaryDim / 2, s.attentionScaling);
      f.cosSin = table.cosSin;
      f.tablePositions = table.positions;
      if (s.kvLayer >= 0) {
        f.kvLayer = s.kvLayer;
        f.kvPool = be->kv().pool;  // null until the cache is allocated: read again at step time
        f.kvDType = be->kvDType();
        f.kvNumLayers = be->kv().numLayers;
        f.kvTokensPerBlock = be->kv().tokensPerBlock;
      }
      break;
    case spec::Linear::Epilogue::None:
      break;
  }
  // KILN_CUDA_FUSED_LINEAR=0 (read when the engine loads) runs every fused linear as separate kernels,
  // for comparisons.
  const char* setting = std::getenv("KILN_CUDA_FUSED_LINEAR");
  const bool enabled = !(setting && std::string(setting) == "0");
  // The fused GEMV takes bfloat16 activations and bfloat16, int8, int4 or FP8 weights (FP8: x quantized in
  // the kernel, once per block, as gemvFp8 does).
  const bool gemvTypes = enabled && be->gemm().gemvEnabled() && (s.normPrologue ? normed.dtype : x.dtype) == DType::BF16 &&
                         (s.dtype == DType::BF16 || s.dtype == DType::I8 || s.dtype == DType::I4 || s.dtype == DType::F8E4M3);
  f.groupSize = s.groupSize;
  return [=](const StepRuntime& rt) {
    const int64_t rows = s.x.numRows(*rt.step);
    if (rows <= 0) return;
    cudaStream_t stream = be->stream();
    if (gemvTypes && gemvFusedApplies(s.dtype, x, rows, s.weight, s.K, s.normPrologue) &&
        (!s.addPrologue || gemvFusedApplies(s.dtype, f.addend, rows, s.weight, s.K, true))) {
      GemvFusion g = f;
      const DeviceStep& step = deviceStep(rt);
      g.positions = step.positions;
      if (g.kvLayer >= 0) {
        g.kvPool = be->kv().pool;
        g.kvNumLayers = be->kv().numLayers;
        g.kvTokensPerBlock = be->kv().tokensPerBlock;
        g.tokenSeq = step.tokenSeq;
        g.blockTables = step.blockTables;
        g.blockTableStride = step.blockTableStride;
      }
      gemvFused(stream, s.dtype, x, rows, s.weight, s.N, s.K, s.bias, g, y);
      return;
    }
    if (s.addPrologue) {
      addRmsNorm(stream, x, f.addend, rows, s.K, s.normWeight, s.normWDType, s.normEps, s.normWeightOffset, f.sum, normed);
    } else if (s.normPrologue) {
      rmsNorm(stream, x, rows, s.normWeight, s.normWDType, 1, s.K, s.normEps, s.normWeightOffset, normed);
    }
    gemm(rt);
    switch (s.epilogue) {
      case spec::Linear::Epilogue::Residual:
        elementwise(stream, Elementwise::Add, f.residual, product, rows, s.N, 0.0f, y);
        break;
      case spec::Linear::Epilogue::Swiglu:
        elementwise(stream, Elementwise::Swiglu, product, columns(product, s.N / 2), rows, s.N / 2, 0.0f, y);
        break;
      case spec::Linear::Epilogue::Rope: {
        // One launch for both ropes and the cache write (KILN_CUDA_ROPE_QKV=0: the three kernels, read
        // once, for comparisons).
        if (ropeQkvFused()) {
          const DeviceKv& kv = be->kv();
          ropeQkv(stream, product, deviceStep(rt), s.numHeads, s.numKvHeads, s.headDim, s.rotaryDim, s.interleaved, s.invFreq,
                  s.attentionScaling, table.cosSin, table.positions, y, f.ropedK, be->kvDType(), s.kvLayer >= 0 ? &kv : nullptr,
                  static_cast<int32_t>(s.kvLayer));
          break;
        }
        const int32_t* positions = deviceStep(rt).positions;
        rope(stream, product, rows, positions, s.numHeads, s.headDim, s.rotaryDim, s.interleaved, s.invFreq,
             s.attentionScaling, table.cosSin, table.positions, y);
        rope(stream, columns(product, qCols), rows, positions, s.numKvHeads, s.headDim, s.rotaryDim, s.interleaved,
             s.invFreq, s.attentionScaling, table.cosSin, table.positions, f.ropedK);
        if (s.kvLayer >= 0) {
          storeKvRows(stream, be->kvDType(), deviceStep(rt), be->kv(), static_cast<int32_t>(s.kvLayer), f.ropedK,
                      columns(product, qCols + kCols));
        }
        break;
      }
      case spec::Linear::Epilogue::None:
        break;
    }
  };
}

}  // namespace

BoundOp bindLinear(OpBinding& b) {
  const spec::Linear s = spec::linear(b);
  return s.fused() ? bindFusedLinear(b, s) : bindGemm(b, s);
}

}  // namespace ops
}  // namespace cuda
}  // namespace kiln
