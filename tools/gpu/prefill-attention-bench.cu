// Prefill attention alone on the GPU machine: Kiln's attention() entry point (native/src/.../kernels) on
// packed prefill and mixed steps over a paged bf16/f16 cache, each output row checked against a float64
// reference computed here from the same rounded Q, K and V, and the shapes of the issue-10 benchmark
// model timed. KILN_CUDA_PREFILL_ATTENTION picks the kernel as in the library (read once: one process
// per setting):
//
//   for f in tools/gpu/prefill-attention-bench.cu native/src/kiln/backends/cuda/kernels/{attention,attention_prefill,attention_decode,launch}.cu; do
//     nvcc -O3 -std=c++17 --expt-relaxed-constexpr -arch=sm_90 -I native/src -c $f -o /tmp/pab-$(basename $f).o & done; wait
//   nvcc -arch=sm_90 -o /tmp/pab /tmp/pab-*.o && /tmp/pab; KILN_CUDA_PREFILL_ATTENTION=wmma /tmp/pab
//
// (the files compiled side by side: attention.cu alone takes the longest). The float64 reference runs on
// one CPU core: a few seconds per setting.
//
// Exit status 1 when a row's relative error (‖out − ref‖ / ‖ref‖) is above 1e-2 (bf16) or 3e-3 (f16):
// Q and P are rounded to 16 bits for the tensor cores and the output is stored in 16 bits.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kiln/backends/cuda/kernels/kernels.h"

#define CHECK(x)                                                                              \
  do {                                                                                        \
    cudaError_t e = (x);                                                                      \
    if (e != cudaSuccess) {                                                                   \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e)); \
      std::exit(2);                                                                           \
    }                                                                                         \
  } while (0)

using kiln::DType;
namespace kc = kiln::cuda;

struct Seq {
  int cached;  // keys already in the cache before this step
  int fresh;   // this step's tokens, at positions cached .. cached + fresh - 1
};
struct Case {
  const char* name;
  int headDim, numHeads, numKvHeads, window;
  bool bf16, timed;
  std::vector<Seq> seqs;
};

static uint16_t toBits(float x, bool bf16) {
  if (bf16) {
    const __nv_bfloat16 h = __float2bfloat16_rn(x);
    return *reinterpret_cast<const uint16_t*>(&h);
  }
  const __half h = __float2half_rn(x);
  return *reinterpret_cast<const uint16_t*>(&h);
}
static float fromBits(uint16_t b, bool bf16) {
  if (bf16) return __bfloat162float(*reinterpret_cast<const __nv_bfloat16*>(&b));
  return __half2float(*reinterpret_cast<const __half*>(&b));
}

static bool runCase(const Case& c, const char* kernel) {
  const int D = c.headDim, H = c.numHeads, KV = c.numKvHeads, group = H / KV;
  const int tokensPerBlock = 16, numLayers = 2, layer = 1;
  const int64_t rowSize = static_cast<int64_t>(KV) * D, blockStride = tokensPerBlock * rowSize;
  std::mt19937 rng(1234 + D + H);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);

  // Blocks handed out in reverse, so that a sequence's blocks are not in order in the pool.
  const int numSeqs = static_cast<int>(c.seqs.size());
  int stride = 0, totalBlocks = 0;
  for (const Seq& s : c.seqs) {
    const int blocks = (s.cached + s.fresh + tokensPerBlock - 1) / tokensPerBlock;
    stride = std::max(stride, blocks);
    totalBlocks += blocks;
  }
  std::vector<int32_t> tables(static_cast<size_t>(numSeqs) * stride, 0);
  int nextBlock = totalBlocks;
  for (int s = 0; s < numSeqs; ++s) {
    const int blocks = (c.seqs[s].cached + c.seqs[s].fresh + tokensPerBlock - 1) / tokensPerBlock;
    for (int b = 0; b < blocks; ++b) tables[static_cast<size_t>(s) * stride + b] = --nextBlock;
  }
  // The cache (every position of every sequence, this step's too: attention runs with storeRows false).
  std::vector<uint16_t> pool(static_cast<size_t>(totalBlocks) * numLayers * 2 * blockStride, 0);
  std::vector<std::vector<float>> keys(numSeqs), values(numSeqs);  // [pos][kvHead * D + d], rounded
  for (int s = 0; s < numSeqs; ++s) {
    const int n = c.seqs[s].cached + c.seqs[s].fresh;
    keys[s].resize(static_cast<size_t>(n) * rowSize);
    values[s].resize(static_cast<size_t>(n) * rowSize);
    for (int p = 0; p < n; ++p) {
      const int64_t block = tables[static_cast<size_t>(s) * stride + p / tokensPerBlock];
      for (int which = 0; which < 2; ++which) {
        const int64_t at = ((block * numLayers + layer) * 2 + which) * blockStride + (p % tokensPerBlock) * rowSize;
        for (int64_t e = 0; e < rowSize; ++e) {
          const uint16_t bits = toBits(uniform(rng), c.bf16);
          pool[at + e] = bits;
          (which ? values : keys)[s][static_cast<size_t>(p) * rowSize + e] = fromBits(bits, c.bf16);
        }
      }
    }
  }
  // The step: tokens, positions, sequences, query tiles of at most kQueryTile consecutive tokens.
  std::vector<int32_t> positions, tokenSeq, tiles;
  for (int s = 0; s < numSeqs; ++s) {
    for (int i = 0; i < c.seqs[s].fresh; ++i) {
      const int t = static_cast<int>(positions.size());
      if (i % kc::kQueryTile == 0) {
        tiles.push_back(t);
        tiles.push_back(0);
      }
      ++tiles.back();
      positions.push_back(c.seqs[s].cached + i);
      tokenSeq.push_back(s);
    }
  }
  const int T = static_cast<int>(positions.size());
  std::vector<uint16_t> q(static_cast<size_t>(T) * H * D);
  for (auto& x : q) x = toBits(uniform(rng), c.bf16);

  int32_t *dPositions, *dTokenSeq, *dTables, *dTiles;
  void *dPool, *dQ, *dOut;
  CHECK(cudaMalloc(&dPositions, T * 4));
  CHECK(cudaMalloc(&dTokenSeq, T * 4));
  CHECK(cudaMalloc(&dTables, tables.size() * 4));
  CHECK(cudaMalloc(&dTiles, tiles.size() * 4));
  CHECK(cudaMalloc(&dPool, pool.size() * 2));
  CHECK(cudaMalloc(&dQ, q.size() * 2));
  CHECK(cudaMalloc(&dOut, q.size() * 2));
  CHECK(cudaMemcpy(dPositions, positions.data(), T * 4, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dTokenSeq, tokenSeq.data(), T * 4, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dTables, tables.data(), tables.size() * 4, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dTiles, tiles.data(), tiles.size() * 4, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dPool, pool.data(), pool.size() * 2, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dQ, q.data(), q.size() * 2, cudaMemcpyHostToDevice));
  CHECK(cudaMemset(dOut, 0xff, q.size() * 2));  // NaN-ish bits: a row left unwritten fails

  kc::DeviceStep step;
  step.numTokens = T;
  step.numSeqs = numSeqs;
  step.blockTableStride = stride;
  step.positions = dPositions;
  step.tokenSeq = dTokenSeq;
  step.blockTables = dTables;
  step.numTiles = static_cast<int32_t>(tiles.size() / 2);
  step.tiles = dTiles;
  kc::DeviceKv kv;
  kv.pool = dPool;
  kv.numLayers = numLayers;
  kv.numKvHeads = KV;
  kv.headDim = D;
  kv.tokensPerBlock = tokensPerBlock;
  const DType dtype = c.bf16 ? DType::BF16 : DType::F16;
  const kc::ConstMatrix qm(dQ, dtype, static_cast<int64_t>(H) * D);
  const kc::Matrix om{dOut, dtype, static_cast<int64_t>(H) * D};
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  cudaStream_t stream;
  CHECK(cudaStreamCreate(&stream));
  auto call = [&] {
    kc::attention(stream, dtype, step, kv, layer, qm, qm, qm, H, KV, D, scale, c.window, 0.0f, nullptr, om,
                  kc::AttentionSplit{}, false);
  };
  call();
  CHECK(cudaStreamSynchronize(stream));
  CHECK(cudaGetLastError());
  std::vector<uint16_t> out(q.size());
  CHECK(cudaMemcpy(out.data(), dOut, out.size() * 2, cudaMemcpyDeviceToHost));

  // float64 reference, row by row.
  double worst = 0.0, flops = 0.0;
  for (int t = 0; t < T; ++t) {
    const int s = tokenSeq[t], pos = positions[t];
    const int lo = c.window > 0 ? std::max(0, pos - c.window + 1) : 0;
    for (int h = 0; h < H; ++h) {
      const int kvh = h / group;
      std::vector<double> scores(pos - lo + 1);
      double best = -INFINITY;
      for (int j = lo; j <= pos; ++j) {
        double dot = 0.0;
        for (int d = 0; d < D; ++d)
          dot += static_cast<double>(fromBits(q[(static_cast<size_t>(t) * H + h) * D + d], c.bf16)) *
                 keys[s][static_cast<size_t>(j) * rowSize + kvh * D + d];
        scores[j - lo] = dot * scale;
        best = std::max(best, scores[j - lo]);
      }
      double total = 0.0;
      for (double& x : scores) total += (x = std::exp(x - best));
      double diff = 0.0, norm = 0.0;
      for (int d = 0; d < D; ++d) {
        double ref = 0.0;
        for (int j = lo; j <= pos; ++j) ref += scores[j - lo] * values[s][static_cast<size_t>(j) * rowSize + kvh * D + d];
        ref /= total;
        const double got = fromBits(out[(static_cast<size_t>(t) * H + h) * D + d], c.bf16);
        diff += (got - ref) * (got - ref);
        norm += ref * ref;
      }
      const double e = norm > 0.0 ? std::sqrt(diff / norm) : std::sqrt(diff);
      worst = std::isnan(e) ? INFINITY : std::max(worst, e);
      flops += 4.0 * D * (pos - lo + 1);
    }
  }
  const double bar = c.bf16 ? 1e-2 : 3e-3;
  const bool pass = worst <= bar;

  std::string timing = "-";
  if (c.timed) {
    for (int i = 0; i < 20; ++i) call();
    cudaEvent_t start, stop;
    CHECK(cudaEventCreate(&start));
    CHECK(cudaEventCreate(&stop));
    constexpr int kRuns = 200;
    CHECK(cudaEventRecord(start, stream));
    for (int i = 0; i < kRuns; ++i) call();
    CHECK(cudaEventRecord(stop, stream));
    CHECK(cudaEventSynchronize(stop));
    float ms = 0.0f;
    CHECK(cudaEventElapsedTime(&ms, start, stop));
    const double us = 1000.0 * ms / kRuns;
    char text[96];
    std::snprintf(text, sizeof text, "%.1f us, %.1f TFLOP/s", us, flops / (us * 1e-6) / 1e12);
    timing = text;
    CHECK(cudaEventDestroy(start));
    CHECK(cudaEventDestroy(stop));
  }
  std::printf("| %s | %s | %d | %.2e | %s | %s |\n", c.name, kernel, T, worst, pass ? "ok" : "FAIL", timing.c_str());
  CHECK(cudaStreamDestroy(stream));
  for (void* p : {static_cast<void*>(dPositions), static_cast<void*>(dTokenSeq), static_cast<void*>(dTables),
                  static_cast<void*>(dTiles), dPool, dQ, dOut})
    CHECK(cudaFree(p));
  return pass;
}

int main() {
  const char* setting = std::getenv("KILN_CUDA_PREFILL_ATTENTION");
  const char* kernel = setting && *setting ? setting : "mma (default)";
  const std::vector<Case> cases = {
      {"TinyLlama layer: 512-token prompt, head dim 64, 32 heads / 4 KV, bf16", 64, 32, 4, 0, true, true, {{0, 512}}},
      {"head dim 128, 32 heads / 8 KV, 512-token prompt, bf16", 128, 32, 8, 0, true, true, {{0, 512}}},
      {"head dim 64, 32 / 4, 1024-token prompt, bf16", 64, 32, 4, 0, true, true, {{0, 1024}}},
      {"chunk: positions 300-511 after 300 cached, head dim 64, 32 / 4, bf16", 64, 32, 4, 0, true, false, {{300, 212}}},
      {"mixed: 150 new, 70 after 40 cached, 1 decode at 90, head dim 64, 16 / 2, bf16", 64, 16, 2, 0, true, false, {{0, 150}, {40, 70}, {90, 1}}},
      {"head dim 128, MHA 2 / 2, window 50, 150 tokens, f16", 128, 2, 2, 50, false, false, {{0, 150}}},
      {"head dim 64, 16 heads / 1 KV (group 16), 77 tokens after 13, window 40, f16", 64, 16, 1, 40, false, false, {{13, 77}}},
      {"head dim 64, 6 heads / 2 KV (group 3), 100 tokens, bf16", 64, 6, 2, 0, true, false, {{0, 100}}},
  };
  std::printf("| case | KILN_CUDA_PREFILL_ATTENTION | tokens | worst row error | | time per call |\n| --- | --- | --- | --- | --- | --- |\n");
  bool all = true;
  for (const Case& c : cases) all = runCase(c, kernel) && all;
  return all ? 0 : 1;
}
