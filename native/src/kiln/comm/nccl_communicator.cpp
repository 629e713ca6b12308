// comm::Communicator over NCCL (CUDA ranks). Design: docs/decisions/0010-tensor-and-pipeline-parallelism.md.
// NCCL's unique id travels over the MPI communicator of the same ranks, as TensorRT-LLM does. Every call
// only enqueues work on the backend's stream: the caller (a bound op) never waits for it, and a step
// captured as a CUDA graph replays its collectives with its kernels. A peer that dies leaves this rank's
// stream waiting in a collective; the MPI side (control messages, mpirun) ends the job then, see
// decision 0010's "Failures".
#include "kiln/comm/nccl_communicator.h"

#include <nccl.h>

#include <stdexcept>
#include <string>

namespace kiln {
namespace comm {
namespace {

void check(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) throw std::runtime_error(std::string("NCCL ") + what + ": " + ncclGetErrorString(r));
}

ncclDataType_t ncclTypeOf(DType dtype) {
  switch (dtype) {
    case DType::F32: return ncclFloat32;
    case DType::F16: return ncclFloat16;
    case DType::BF16: return ncclBfloat16;
    default: throw std::runtime_error(std::string("NCCL all-reduce of ") + dtypeName(dtype) + " is not supported");
  }
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(Communicator& host, int device, cudaStream_t stream) : host_(host), device_(device), stream_(stream) {
    ncclUniqueId id{};
    if (host.rank() == 0) check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    host.broadcast(&id, sizeof id, 0);
    if (cudaSetDevice(device) != cudaSuccess) throw std::runtime_error("cudaSetDevice before ncclCommInitRank failed");
    check(ncclCommInitRank(&comm_, host.size(), id, host.rank()), "ncclCommInitRank");
  }
  // Destroyed after the engine's backend (Engine's members), whose destructor has drained the stream and
  // freed the CUDA graphs that captured this communicator's work.
  ~NcclCommunicator() override {
    if (comm_) {
      cudaSetDevice(device_);
      ncclCommDestroy(comm_);
    }
  }

  const char* transport() const override { return "nccl"; }
  int rank() const override { return host_.rank(); }
  int size() const override { return host_.size(); }
  bool deviceBuffers() const override { return true; }

  void allReduceSum(const void* send, void* recv, size_t count, DType dtype) override {
    check(ncclAllReduce(send, recv, count, ncclTypeOf(dtype), ncclSum, comm_, stream_), "ncclAllReduce");
  }
  void allGather(const void* send, void* recv, size_t bytes) override {
    check(ncclAllGather(send, recv, bytes, ncclUint8, comm_, stream_), "ncclAllGather");
  }
  void broadcast(void* data, size_t bytes, int root) override {
    check(ncclBroadcast(data, data, bytes, ncclUint8, root, comm_, stream_), "ncclBroadcast");
  }
  void send(const void* data, size_t bytes, int peer) override {
    check(ncclSend(data, bytes, ncclUint8, peer, comm_, stream_), "ncclSend");
  }
  void recv(void* data, size_t bytes, int peer) override {
    check(ncclRecv(data, bytes, ncclUint8, peer, comm_, stream_), "ncclRecv");
  }
  // Host values (load time): over the MPI communicator.
  int64_t allReduceMin(int64_t value) override { return host_.allReduceMin(value); }
  std::unique_ptr<Communicator> split(int, int) override {
    throw std::logic_error("split an NCCL communicator's MPI group, then make an NCCL communicator of the part");
  }

 private:
  Communicator& host_;
  int device_;
  cudaStream_t stream_;
  ncclComm_t comm_ = nullptr;
};

}  // namespace

std::unique_ptr<Communicator> makeNcclCommunicator(Communicator& hostGroup, int device, cudaStream_t stream) {
  return std::make_unique<NcclCommunicator>(hostGroup, device, stream);
}

}  // namespace comm
}  // namespace kiln
