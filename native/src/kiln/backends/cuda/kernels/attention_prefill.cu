// Prefill and mixed-step attention on tensor cores, FlashAttention-2's loop written with mma.sync
// (m16n8k16, 16-bit operands, float32 accumulators) instead of attendTiled's WMMA, which goes through
// shared memory for S, P and O and loads K and V synchronously:
//   - the block's 64 rows are attendTiled's: (token, query head) pairs of one KV head (FlashInfer's GQA
//     layout), 16 per warp; each warp keeps its rows' Q fragments in registers for the whole walk;
//   - keys come in tiles of kKeys, K and V copied from the paged cache into shared memory with
//     cp.async, two stages: tile i + 1 is in flight while tile i is used;
//   - S = Q K^T lands in registers (mma accumulators), the online softmax runs there (a row's values sit
//     in the 4 lanes of a quad: max by two shuffles, the row sum kept per lane and added up at the end),
//     and P, rounded to 16 bits, is the A operand of P V as it stands (the accumulator layout of S is
//     the A-operand layout of P, FlashAttention-2's trick): no shared-memory round trip;
//   - K and V fragments come from shared memory by ldmatrix (V by ldmatrix.trans), rows stored with an
//     XOR swizzle of their 16-byte chunks so that the 8 rows an ldmatrix phase reads hit 8 different
//     bank groups.
// Causal per row position, sliding window; softcap and ALiBi stay on attendTiled.
#include "kiln/backends/cuda/kernels/attention_prefill.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kiln/backends/cuda/kernels/common.cuh"

namespace kiln {
namespace cuda {

namespace {

constexpr int kRows = kQueryTile;  // rows (token, query head) per block: attendTiled's
constexpr int kWarps = kRows / 16;
constexpr int kThreads = kWarps * 32;
constexpr int kKeys = 64;  // keys per tile
constexpr float kLog2e = 1.4426950408889634f;
static_assert(kRows <= kKeys, "the queries are staged in a K tile's room");

// Shared memory: a tile is kKeys rows of D 16-bit elements; row r's 16-byte chunk c sits at chunk
// c ^ (r % 8). An ldmatrix phase reads one chunk column of 8 consecutive rows: swizzled, those are 8
// distinct chunks of a 128-byte line, no bank conflict (unswizzled, rows 128 or 256 bytes apart all
// map to the same banks).
template <int D>
__device__ __forceinline__ int swizzled(int row, int chunk) {
  return row * D + ((chunk ^ (row & 7)) << 3);
}

__device__ __forceinline__ uint32_t sharedAddress(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes from global to shared memory, asynchronously; bytes == 0 writes zeros (keys past the last
// row's position: never weighed, but the cache there may hold anything, and 0 * NaN would leak into O).
__device__ __forceinline__ void copyAsync(void* dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sharedAddress(dst)), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void commitCopies() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void waitCopies() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void loadMatrices(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(sharedAddress(p)));
}
__device__ __forceinline__ void loadMatricesTransposed(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(sharedAddress(p)));
}

// c += a b: a 16x16 (row-major fragment), b 16x8 (column-major fragment), c 16x8 float32.
template <typename T>
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Two floats as a pair of T in one register, lo in the low half (the lower column of a fragment).
template <typename T>
__device__ __forceinline__ uint32_t pack(float lo, float hi) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
}

template <typename T>
constexpr DType dtypeOf() {
  return std::is_same_v<T, __nv_bfloat16> ? DType::BF16 : DType::F16;
}

template <int D>
struct PrefillShared {
  static constexpr size_t tile = static_cast<size_t>(kKeys) * D * 2;  // bytes of one K or V tile
  static constexpr size_t bytes = 4 * tile;                           // two stages of K and V
};

// Fragment conventions (PTX ISA, mma.m16n8k16): lane = 4 g + t. A: a0 (row g, cols 2t, 2t+1), a1 (row
// g + 8, same cols), a2 (row g, cols 2t + 8, +9), a3 (row g + 8, those). B: b0 (rows 2t, 2t+1, col g),
// b1 (rows 2t + 8, +9, col g). C: c0, c1 (row g, cols 2t, 2t+1), c2, c3 (row g + 8, those).
template <typename T, int D>
__global__ void __launch_bounds__(kThreads) attendPrefillMma(DeviceStep step, const T* pool, PagedCache cache,
                                                             int64_t layer, ConstMatrix q, int group, int tokens,
                                                             float scale, int slidingWindow, bool vectorQ,
                                                             bool vectorOut, Matrix out) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  extern __shared__ __align__(128) unsigned char shared[];
  T* tiles = reinterpret_cast<T*>(shared);  // stage s: K at 2 s kKeys D, V after it
  startAfterPriorKernels();

  // This block's tokens: part blockIdx.z of the query tile, `tokens` of them at most (attendTiled's cut).
  // Tiles in reverse: a prompt's last tiles see the most keys, and blocks start roughly in blockIdx.x
  // order, so when the grid is more than one wave the longest blocks start first.
  const int tile = static_cast<int>(gridDim.x - 1 - blockIdx.x);
  const int tileFirst = step.tiles[2 * tile], tileCount = step.tiles[2 * tile + 1];
  const int first = tileFirst + static_cast<int>(blockIdx.z) * tokens;
  const int count = min(tokens, tileFirst + tileCount - first);
  if (count <= 0) return;  // the whole block: no barrier is skipped
  const int rows = count * group;  // row r: token first + r / group, query head kvHead * group + r % group
  const int kvHead = static_cast<int>(blockIdx.y);
  const int32_t* table = step.blockTables + static_cast<int64_t>(step.tokenSeq[first]) * step.blockTableStride;
  const int64_t kvOffset = static_cast<int64_t>(kvHead) * D;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t = lane & 3;

  // The tokens of a tile are consecutive positions of one sequence: keys [lo, lastPos] cover every row.
  const int firstPos = step.positions[first], lastPos = step.positions[first + count - 1];
  const int lo = slidingWindow > 0 ? max(0, firstPos - slidingWindow + 1) : 0;
  const int numKeyTiles = (lastPos - lo + kKeys) / kKeys;

  // K and V rows of key tile i into stage s: thread tid copies chunk tid % kChunks of every
  // (kThreads / kChunks)-th key, rows past lastPos zero-filled.
  auto loadTile = [&](int i, int s) {
    T* ks = tiles + static_cast<size_t>(s) * 2 * kKeys * D;
    T* vs = ks + kKeys * D;
    const int c = tid % kChunks;
    constexpr int kStep = kThreads / kChunks;
#pragma unroll
    for (int j = tid / kChunks; j < kKeys; j += kStep) {
      const int key = lo + i * kKeys + j;
      const bool in = key <= lastPos;
      const T* kr = in ? cache.row(pool, table, layer, key, 0) + kvOffset + c * 8 : pool;
      const T* vr = in ? cache.row(pool, table, layer, key, 1) + kvOffset + c * 8 : pool;
      copyAsync(ks + swizzled<D>(j, c), kr, in ? 16 : 0);
      copyAsync(vs + swizzled<D>(j, c), vr, in ? 16 : 0);
    }
    commitCopies();
  };
  loadTile(0, 0);

  // The rows' queries, in T, through stage 1's K room (free until tile 1 is loaded, after the first
  // barrier of the loop), then into registers: A fragments of Q for each 16-wide slice of the head dim.
  {
    T* qs = tiles + 2 * kKeys * D;
    for (int e = tid; e < kRows * kChunks; e += kThreads) {
      const int r = e / kChunks, c = e % kChunks;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (r < rows) {
        const int64_t at = static_cast<int64_t>(first + r / group) * q.stride +
                           static_cast<int64_t>(kvHead * group + r % group) * D + c * 8;
        if (vectorQ) {
          v = *reinterpret_cast<const uint4*>(static_cast<const T*>(q.data) + at);
        } else {
          T* h = reinterpret_cast<T*>(&v);
#pragma unroll
          for (int i = 0; i < 8; ++i) h[i] = fromF<T>(load(q.data, q.dtype, at + i));
        }
      }
      *reinterpret_cast<uint4*>(qs + swizzled<D>(r, c)) = v;
    }
    __syncthreads();
  }
  uint32_t qf[D / 16][4];
  {
    const T* qs = tiles + 2 * kKeys * D;
    // ldmatrix x4: lanes 0-15 address rows 0-15 at the slice's first 8 columns, lanes 16-31 the next 8:
    // the four matrices come back as a0..a3.
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) loadMatrices(qf[kk], qs + swizzled<D>(warp * 16 + (lane & 15), kk * 2 + (lane >> 4)));
  }

  // This lane's two rows: warp * 16 + g (A) and + 8 (B); a padding row has position -1 (all masked).
  const int rowA = warp * 16 + g, rowB = rowA + 8;
  const int posA = rowA < rows ? step.positions[first + rowA / group] : -1;
  const int posB = rowB < rows ? step.positions[first + rowB / group] : -1;
  const int lowA = slidingWindow > 0 ? posA - slidingWindow + 1 : 0;
  const int lowB = slidingWindow > 0 ? posB - slidingWindow + 1 : 0;
  const float scaleLog2 = scale * kLog2e;  // exp(x scale) = exp2(x scale log2 e)

  float o[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float maxA = -INFINITY, maxB = -INFINITY, sumA = 0.0f, sumB = 0.0f;  // sums: this lane's columns only

  for (int i = 0; i < numKeyTiles; ++i) {
    const int stage = i & 1;
    __syncthreads();  // every warp is done with stage stage ^ 1 (tile i - 1, or the queries)
    if (i + 1 < numKeyTiles) {
      loadTile(i + 1, stage ^ 1);
      waitCopies<1>();  // tile i has landed (this thread's copies); tile i + 1 may still fly
    } else {
      waitCopies<0>();
    }
    __syncthreads();  // ... and every thread's copies of tile i are visible
    // A warp whose 16 rows are all padding (a decode tile's, a short last part) only helps load and wait
    // (uniform in the warp: ldmatrix and mma are warp-wide).
    if (warp * 16 >= rows) continue;
    const T* ks = tiles + static_cast<size_t>(stage) * 2 * kKeys * D;
    const T* vs = ks + kKeys * D;
    const int k0 = lo + i * kKeys;

    // S = Q K^T for the warp's 16 rows and the tile's keys: s[n] is keys k0 + 8 n .. + 7. K is stored
    // [key][d], which read as 8x8 matrices without transposing is the B operand (col-major K^T). x4:
    // matrices (keys +0, cols +0), (keys +0, cols +8), (keys +8, cols +0), (keys +8, cols +8), so lane
    // group m = lane / 8 addresses key row (m / 2) * 8 + lane % 8, chunk 2 kk + m % 2.
    float s[kKeys / 8][4];
#pragma unroll
    for (int n = 0; n < kKeys / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
      for (int np = 0; np < kKeys / 16; ++np) {
        uint32_t b[4];
        loadMatrices(b, ks + swizzled<D>(np * 16 + (lane >> 4) * 8 + (lane & 7), kk * 2 + ((lane >> 3) & 1)));
        mma<T>(s[2 * np], qf[kk], b[0], b[1]);
        mma<T>(s[2 * np + 1], qf[kk], b[2], b[3]);
      }
    }

    // Online softmax in base 2: mask, scale, the rows' tile max over the quad, rescale what came before.
    float tileMaxA = -INFINITY, tileMaxB = -INFINITY;
#pragma unroll
    for (int n = 0; n < kKeys / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int key = k0 + 8 * n + 2 * t + e;
        s[n][e] = key <= posA && key >= lowA ? s[n][e] * scaleLog2 : -INFINITY;
        s[n][2 + e] = key <= posB && key >= lowB ? s[n][2 + e] * scaleLog2 : -INFINITY;
        tileMaxA = fmaxf(tileMaxA, s[n][e]);
        tileMaxB = fmaxf(tileMaxB, s[n][2 + e]);
      }
    }
#pragma unroll
    for (int x = 1; x <= 2; x <<= 1) {
      tileMaxA = fmaxf(tileMaxA, __shfl_xor_sync(0xffffffffu, tileMaxA, x));
      tileMaxB = fmaxf(tileMaxB, __shfl_xor_sync(0xffffffffu, tileMaxB, x));
    }
    const float newMaxA = fmaxf(maxA, tileMaxA), newMaxB = fmaxf(maxB, tileMaxB);
    // A row with no key yet keeps max -inf: subtract 0 instead, so exp2(-inf - 0) = 0, not NaN.
    const float baseA = newMaxA == -INFINITY ? 0.0f : newMaxA, baseB = newMaxB == -INFINITY ? 0.0f : newMaxB;
    const float correctionA = exp2f(maxA - baseA), correctionB = exp2f(maxB - baseB);  // 0 before any key
    maxA = newMaxA;
    maxB = newMaxB;
    sumA *= correctionA;
    sumB *= correctionB;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      o[n][0] *= correctionA;
      o[n][1] *= correctionA;
      o[n][2] *= correctionB;
      o[n][3] *= correctionB;
    }
    // P as A fragments of the 16-key slices: slice kk is S tiles 2 kk (a0, a1) and 2 kk + 1 (a2, a3).
    uint32_t p[kKeys / 16][4];
#pragma unroll
    for (int n = 0; n < kKeys / 8; ++n) {
      const float p0 = exp2f(s[n][0] - baseA), p1 = exp2f(s[n][1] - baseA);
      const float p2 = exp2f(s[n][2] - baseB), p3 = exp2f(s[n][3] - baseB);
      sumA += p0 + p1;
      sumB += p2 + p3;
      p[n / 2][(n & 1) * 2] = pack<T>(p0, p1);
      p[n / 2][(n & 1) * 2 + 1] = pack<T>(p2, p3);
    }

    // O += P V: V is stored [key][d]; read transposed, 8x8 matrices give the B operand (keys down, d
    // across). x4: (keys +0, d +0) b0, (keys +8, d +0) b1 of d tile 2 dp; (keys +0, d +8), (keys +8,
    // d +8) of tile 2 dp + 1: lane group m addresses key row (m % 2) * 8 + lane % 8, chunk 2 dp + m / 2.
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t b[4];
        loadMatricesTransposed(b, vs + swizzled<D>(kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7), dp * 2 + (lane >> 4)));
        mma<T>(o[2 * dp], p[kk], b[0], b[1]);
        mma<T>(o[2 * dp + 1], p[kk], b[2], b[3]);
      }
    }
  }

  // The rows' sums over the quad's columns, then O / sum to the output rows.
#pragma unroll
  for (int x = 1; x <= 2; x <<= 1) {
    sumA += __shfl_xor_sync(0xffffffffu, sumA, x);
    sumB += __shfl_xor_sync(0xffffffffu, sumB, x);
  }
  const float invA = sumA > 0.0f ? 1.0f / sumA : 0.0f, invB = sumB > 0.0f ? 1.0f / sumB : 0.0f;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = half ? rowB : rowA;
    if (r >= rows) continue;
    const float inv = half ? invB : invA;
    const int64_t at = static_cast<int64_t>(first + r / group) * out.stride + static_cast<int64_t>(kvHead * group + r % group) * D;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      const int d = 8 * n + 2 * t;
      const float x0 = o[n][2 * half] * inv, x1 = o[n][2 * half + 1] * inv;
      if (vectorOut) {
        *reinterpret_cast<uint32_t*>(static_cast<T*>(out.data) + at + d) = pack<T>(x0, x1);
      } else {
        store(out.data, out.dtype, at + d, x0);
        store(out.data, out.dtype, at + d + 1, x1);
      }
    }
  }
}

template <typename T, int D>
void launchPrefill(cudaStream_t stream, const DeviceStep& step, const T* pool, PagedCache cache, int64_t layer,
                   ConstMatrix q, int64_t numKvHeads, int64_t group, float scale, int64_t slidingWindow, Matrix out) {
  constexpr size_t bytes = PrefillShared<D>::bytes;
  static const cudaError_t opted = cudaFuncSetAttribute(attendPrefillMma<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                        static_cast<int>(bytes));
  if (opted != cudaSuccess) throw std::runtime_error(std::string("cuda prefill attention: ") + cudaGetErrorString(opted));
  // attendTiled's cut: tokens per block fill 64 rows with their group of query heads; decode tiles
  // (one token each) take one part.
  const int tokens = static_cast<int>(kRows / group);
  const bool decode = step.numTokens == step.numSeqs;
  const unsigned parts = decode ? 1u : static_cast<unsigned>((kQueryTile + tokens - 1) / tokens);
  // Q rows as 16-byte vectors when they already are T, 16-byte aligned (the step's q is a column slice
  // of a fused QKV output in the activation dtype).
  const bool vectorQ = q.dtype == dtypeOf<T>() && reinterpret_cast<uintptr_t>(q.data) % 16 == 0 && q.stride % 8 == 0;
  // Output pairs as one 32-bit store when they are T and 4-byte aligned.
  const bool vectorOut = out.dtype == dtypeOf<T>() && reinterpret_cast<uintptr_t>(out.data) % 4 == 0 && out.stride % 2 == 0;
  // Positions are int32 on the device (DeviceStep): so are the window and key indices.
  const int window = static_cast<int>(std::min<int64_t>(slidingWindow, INT32_MAX));
  launch(attendPrefillMma<T, D>, dim3(static_cast<unsigned>(step.numTiles), static_cast<unsigned>(numKvHeads), parts),
         dim3(kThreads), bytes, stream, step, pool, cache, layer, q, static_cast<int>(group), tokens, scale, window,
         vectorQ, vectorOut, out);
}

}  // namespace

bool prefillMmaSelected() {
  static const bool mma = [] {
    const char* setting = std::getenv("KILN_CUDA_PREFILL_ATTENTION");
    const std::string value = setting ? setting : "";
    if (value.empty() || value == "mma") return true;
    if (value == "wmma") return false;
    throw std::runtime_error("KILN_CUDA_PREFILL_ATTENTION must be \"mma\" or \"wmma\", got \"" + value + "\"");
  }();
  return mma;
}

bool prefillMmaApplies(DType cacheDType, int64_t headDim, float softcap, const float* alibiSlopes) {
  return (cacheDType == DType::BF16 || cacheDType == DType::F16) && (headDim == 64 || headDim == 128) &&
         !(softcap > 0.0f) && alibiSlopes == nullptr;
}

void attendPrefill(cudaStream_t stream, DType cacheDType, const DeviceStep& step, const void* pool, PagedCache cache,
                   int64_t layer, ConstMatrix q, int64_t numKvHeads, int64_t group, int64_t headDim, float scale,
                   int64_t slidingWindow, Matrix out) {
  if (step.numTiles <= 0) return;
  if (group < 1 || group > kRows) throw std::runtime_error("cuda prefill attention: group of query heads above 64");
  auto run = [&](auto z) {
    using T = decltype(z);
    const T* p = static_cast<const T*>(pool);
    if (headDim == 64) {
      launchPrefill<T, 64>(stream, step, p, cache, layer, q, numKvHeads, group, scale, slidingWindow, out);
    } else if (headDim == 128) {
      launchPrefill<T, 128>(stream, step, p, cache, layer, q, numKvHeads, group, scale, slidingWindow, out);
    } else {
      throw std::runtime_error("cuda prefill attention: head dim must be 64 or 128");
    }
  };
  if (cacheDType == DType::BF16) run(__nv_bfloat16{});
  else if (cacheDType == DType::F16) run(__half{});
  else throw std::runtime_error("cuda prefill attention: the KV cache must be float16 or bfloat16");
}

}  // namespace cuda
}  // namespace kiln
