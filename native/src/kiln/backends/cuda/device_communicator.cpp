#include "kiln/backends/cuda/device_communicator.h"

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "kiln/backends/cuda/cuda_check.h"
#include "kiln/backends/cuda/kernels/kernels.h"
#include "kiln/comm/nccl_communicator.h"

namespace kiln {
namespace cuda {
namespace {

// Each rank's peer-visible region: flag slots, then its own call counters, then the exchange buffer's two
// halves (kernels/peer_allreduce.cu).
constexpr size_t kFlagsBytes = sizeof(uint32_t) * kPeerAllReduceMaxBlocks * kPeerAllReduceMaxRanks;
constexpr size_t kCountersOffset = kFlagsBytes;
constexpr size_t kBuffersOffset = 4096;
constexpr size_t kHalfBytes = size_t{1} << 20;  // the largest sum sent this way: 64 rows of 8,192 bfloat16
static_assert(kCountersOffset + sizeof(uint32_t) * kPeerAllReduceMaxBlocks <= kBuffersOffset, "region layout");

// What each rank tells the others (allGather over MPI, host memory).
struct RankInfo {
  char host[64];
  int32_t device;
  int32_t usable;
  cudaIpcMemHandle_t handle;
};

class PeerRegions {
 public:
  // Null unless every rank can use it (decided together: allReduceMin over hostGroup).
  static std::unique_ptr<PeerRegions> open(comm::Communicator& host, int device) {
    const char* env = std::getenv("KILN_CUDA_PEER_ALLREDUCE");
    const bool wanted = !(env && std::string(env) == "0");
    auto regions = std::unique_ptr<PeerRegions>(new PeerRegions());
    PeerAllReduceRanks& r = regions->ranks_;
    r.rank = host.rank();
    r.world = host.size();
    r.halfBytes = kHalfBytes;
    RankInfo mine{};
    gethostname(mine.host, sizeof mine.host - 1);
    mine.device = device;
    mine.usable = wanted && r.world <= kPeerAllReduceMaxRanks;
    if (mine.usable) {
      check(cudaMalloc(&regions->base_, kBuffersOffset + 2 * kHalfBytes), "cudaMalloc (peer all-reduce)");
      check(cudaMemset(regions->base_, 0, kBuffersOffset + 2 * kHalfBytes), "cudaMemset (peer all-reduce)");
      check(cudaIpcGetMemHandle(&mine.handle, regions->base_), "cudaIpcGetMemHandle");
    }
    std::vector<RankInfo> all(static_cast<size_t>(r.world));
    host.allGather(&mine, all.data(), sizeof(RankInfo));
    bool usable = mine.usable;
    for (int p = 0; p < r.world && usable; ++p) {
      const RankInfo& other = all[static_cast<size_t>(p)];
      if (p == r.rank) continue;
      int canAccess = 0;
      usable = other.usable && std::strncmp(other.host, mine.host, sizeof mine.host) == 0 && other.device != device &&
               cudaDeviceCanAccessPeer(&canAccess, device, other.device) == cudaSuccess && canAccess;
    }
    cudaGetLastError();
    if (host.allReduceMin(usable ? 1 : 0) == 0) return nullptr;  // the region is freed by the destructor
    for (int p = 0; p < r.world; ++p) {
      char* base = static_cast<char*>(regions->base_);
      if (p != r.rank) {
        void* opened = nullptr;
        check(cudaIpcOpenMemHandle(&opened, all[static_cast<size_t>(p)].handle, cudaIpcMemLazyEnablePeerAccess),
              "cudaIpcOpenMemHandle (peer all-reduce)");
        regions->opened_.push_back(opened);
        base = static_cast<char*>(opened);
      }
      r.flags[p] = reinterpret_cast<uint32_t*>(base);
      r.buffers[p] = base + kBuffersOffset;
    }
    r.counters = reinterpret_cast<uint32_t*>(static_cast<char*>(regions->base_) + kCountersOffset);
    return regions;
  }
  ~PeerRegions() {
    for (void* p : opened_) cudaIpcCloseMemHandle(p);
    if (base_) cudaFree(base_);
  }
  const PeerAllReduceRanks& ranks() const { return ranks_; }

 private:
  PeerRegions() = default;
  void* base_ = nullptr;
  std::vector<void*> opened_;
  PeerAllReduceRanks ranks_;
};

class DeviceCommunicator final : public comm::Communicator {
 public:
  DeviceCommunicator(comm::Communicator& host, int device, cudaStream_t stream)
      : nccl_(comm::makeNcclCommunicator(host, device, stream)), peers_(PeerRegions::open(host, device)), stream_(stream) {}

  const char* transport() const override { return peers_ ? "nccl+peer" : "nccl"; }
  int rank() const override { return nccl_->rank(); }
  int size() const override { return nccl_->size(); }
  bool deviceBuffers() const override { return true; }

  void allReduceSum(const void* send, void* recv, size_t count, DType dtype) override {
    const size_t bytes = count * dtypeSize(dtype);
    const bool aligned = (reinterpret_cast<uintptr_t>(send) | reinterpret_cast<uintptr_t>(recv) | bytes) % 16 == 0;
    if (peers_ && aligned && bytes <= kHalfBytes) {
      peerAllReduce(stream_, peers_->ranks(), send, recv, bytes, dtype);
    } else {
      nccl_->allReduceSum(send, recv, count, dtype);
    }
  }
  void allGather(const void* send, void* recv, size_t bytes) override { nccl_->allGather(send, recv, bytes); }
  void broadcast(void* data, size_t bytes, int root) override { nccl_->broadcast(data, bytes, root); }
  void send(const void* data, size_t bytes, int peer) override { nccl_->send(data, bytes, peer); }
  void recv(void* data, size_t bytes, int peer) override { nccl_->recv(data, bytes, peer); }
  int64_t allReduceMin(int64_t value) override { return nccl_->allReduceMin(value); }
  std::unique_ptr<comm::Communicator> split(int color, int key) override { return nccl_->split(color, key); }

 private:
  std::unique_ptr<comm::Communicator> nccl_;
  std::unique_ptr<PeerRegions> peers_;
  cudaStream_t stream_;
};

}  // namespace

std::unique_ptr<comm::Communicator> makeDeviceCommunicator(comm::Communicator& hostGroup, int device, cudaStream_t stream) {
  return std::make_unique<DeviceCommunicator>(hostGroup, device, stream);
}

}  // namespace cuda
}  // namespace kiln
