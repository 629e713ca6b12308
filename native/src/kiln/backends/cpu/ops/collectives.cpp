// all_reduce, all_gather, send, recv on the CPU: activations are packed into a contiguous host buffer
// (a value may be a column view with rowStride > cols), handed to the communicator, and unpacked.
#include <cstring>
#include <memory>
#include <vector>

#include "kiln/backends/cpu/ops/ops.h"
#include "kiln/runtime/op_specs_parallel.h"

namespace kiln {
namespace ops {
namespace {

void pack(const ValueRef& v, int64_t rows, float* out) {
  for (int64_t r = 0; r < rows; ++r) std::memcpy(out + r * v.cols, v.data + r * v.rowStride, sizeof(float) * v.cols);
}

void unpack(const float* in, int64_t rows, const ValueRef& v) {
  for (int64_t r = 0; r < rows; ++r) std::memcpy(v.data + r * v.rowStride, in + r * v.cols, sizeof(float) * v.cols);
}

void requireHost(OpBinding& b, const comm::Communicator* c) {
  if (c->deviceBuffers()) b.fail(std::string("the CPU backend needs a host-memory communicator, not ") + c->transport());
}

}  // namespace

BoundOp bindAllReduce(OpBinding& b) {
  const spec::AllReduce s = spec::allReduce(b);
  requireHost(b, s.group);
  auto buffer = std::make_shared<std::vector<float>>(static_cast<size_t>(s.maxRows * s.x.cols));
  return [s, buffer](const StepRuntime& rt) {
    const int64_t rows = s.x.numRows(*rt.step);
    pack(s.x, rows, buffer->data());
    s.group->allReduceSum(buffer->data(), buffer->data(), static_cast<size_t>(rows * s.x.cols), DType::F32);
    unpack(buffer->data(), rows, s.y);
  };
}

BoundOp bindAllGather(OpBinding& b) {
  const spec::AllGather s = spec::allGather(b);
  requireHost(b, s.group);
  const size_t ranks = static_cast<size_t>(s.group->size());
  auto mine = std::make_shared<std::vector<float>>(static_cast<size_t>(s.maxRows * s.x.cols));
  auto all = std::make_shared<std::vector<float>>(static_cast<size_t>(s.maxRows * s.x.cols) * ranks);
  return [s, mine, all, ranks](const StepRuntime& rt) {
    const int64_t rows = s.x.numRows(*rt.step);
    const int64_t cols = s.x.cols;
    pack(s.x, rows, mine->data());
    s.group->allGather(mine->data(), all->data(), sizeof(float) * static_cast<size_t>(rows * cols));
    // The transport concatenates whole buffers by rank; rank k's columns go to y[:, k * cols ...].
    for (size_t k = 0; k < ranks; ++k) {
      const float* part = all->data() + k * static_cast<size_t>(rows * cols);
      for (int64_t r = 0; r < rows; ++r) {
        std::memcpy(s.y.data + r * s.y.rowStride + static_cast<int64_t>(k) * cols, part + r * cols, sizeof(float) * cols);
      }
    }
  };
}

BoundOp bindSend(OpBinding& b) {
  const spec::PeerTransfer s = spec::send(b);
  requireHost(b, s.pipeline);
  auto buffer = std::make_shared<std::vector<float>>(static_cast<size_t>(s.maxRows * s.value.cols));
  return [s, buffer](const StepRuntime& rt) {
    const int64_t rows = s.value.numRows(*rt.step);
    pack(s.value, rows, buffer->data());
    s.pipeline->send(buffer->data(), sizeof(float) * static_cast<size_t>(rows * s.value.cols), s.peer);
  };
}

BoundOp bindRecv(OpBinding& b) {
  const spec::PeerTransfer s = spec::recv(b);
  requireHost(b, s.pipeline);
  auto buffer = std::make_shared<std::vector<float>>(static_cast<size_t>(s.maxRows * s.value.cols));
  return [s, buffer](const StepRuntime& rt) {
    const int64_t rows = s.value.numRows(*rt.step);
    s.pipeline->recv(buffer->data(), sizeof(float) * static_cast<size_t>(rows * s.value.cols), s.peer);
    unpack(buffer->data(), rows, s.value);
  };
}

}  // namespace ops
}  // namespace kiln
