// all_reduce, all_gather, send, recv on CUDA: the communicator (NCCL, comm/nccl_communicator.cpp) reads
// and writes device memory on the backend's stream, so these only enqueue work and are captured with the
// rest of a decode step's graph. NCCL wants contiguous buffers: a column view (rowStride > cols) is
// packed into the backend's scratch with a strided copy first, and unpacked after.
// Design: docs/decisions/0010-tensor-and-pipeline-parallelism.md.
#include <string>

#include "kiln/backends/cuda/ops/ops.h"
#include "kiln/runtime/op_specs_parallel.h"

namespace kiln {
namespace cuda {
namespace ops {
namespace {

void requireDevice(OpBinding& b, const comm::Communicator* c) {
  if (!c->deviceBuffers()) b.fail(std::string("the CUDA backend needs a device-memory communicator (NCCL), not ") + c->transport());
}

bool dense(const Matrix& m, int64_t cols) { return m.stride == cols; }

// rows x cols elements from one strided matrix to another (either may be dense scratch).
void copyRows(cudaStream_t stream, void* dst, int64_t dstStride, const void* src, int64_t srcStride, int64_t rows, int64_t cols,
              size_t elem) {
  if (rows <= 0 || dst == src) return;
  check(cudaMemcpy2DAsync(dst, static_cast<size_t>(dstStride) * elem, src, static_cast<size_t>(srcStride) * elem,
                          static_cast<size_t>(cols) * elem, static_cast<size_t>(rows), cudaMemcpyDeviceToDevice, stream),
        "cudaMemcpy2DAsync (collective)");
}

}  // namespace

BoundOp bindAllReduce(OpBinding& b) {
  const spec::AllReduce s = spec::allReduce(b);
  requireDevice(b, s.group);
  CudaBackend* be = &backendOf(b);
  const Matrix x = be->value(s.x), y = be->value(s.y);
  if (x.dtype != y.dtype) b.fail("input 0 and output 0 must have one dtype");
  const int64_t cols = s.x.cols;
  const size_t elem = dtypeSize(x.dtype);
  // Dense x and y (the usual case): x summed into y directly. Otherwise through dense scratch.
  const bool direct = dense(x, cols) && dense(y, cols);
  if (!direct) be->reserveScratch(align256(static_cast<size_t>(s.maxRows * cols) * elem));
  comm::Communicator* group = s.group;
  return [=](const StepRuntime& rt) {
    const int64_t rows = s.x.numRows(*rt.step);
    if (rows == 0) return;
    const size_t count = static_cast<size_t>(rows * cols);
    if (direct) {
      group->allReduceSum(x.data, y.data, count, x.dtype);
      return;
    }
    void* buffer = be->scratch();
    copyRows(be->stream(), buffer, cols, x.data, x.stride, rows, cols, elem);
    group->allReduceSum(buffer, buffer, count, x.dtype);
    copyRows(be->stream(), y.data, y.stride, buffer, cols, rows, cols, elem);
  };
}

BoundOp bindAllGather(OpBinding& b) {
  const spec::AllGather s = spec::allGather(b);
  requireDevice(b, s.group);
  CudaBackend* be = &backendOf(b);
  const Matrix x = be->value(s.x), y = be->value(s.y);
  if (x.dtype != y.dtype) b.fail("input 0 and output 0 must have one dtype");
  const int64_t cols = s.x.cols;
  const int64_t ranks = s.group->size();
  const size_t elem = dtypeSize(x.dtype);
  // Scratch: every rank's block [rows, cols] one after the other (NCCL's rank-major result), then this
  // rank's x packed when it is a column view.
  const size_t gathered = align256(static_cast<size_t>(s.maxRows * cols * ranks) * elem);
  const bool packX = !dense(x, cols);
  be->reserveScratch(gathered + (packX ? static_cast<size_t>(s.maxRows * cols) * elem : 0));
  comm::Communicator* group = s.group;
  return [=](const StepRuntime& rt) {
    const int64_t rows = s.x.numRows(*rt.step);
    if (rows == 0) return;
    char* all = static_cast<char*>(be->scratch());
    const void* mine = x.data;
    if (packX) {
      copyRows(be->stream(), all + gathered, cols, x.data, x.stride, rows, cols, elem);
      mine = all + gathered;
    }
    const size_t block = static_cast<size_t>(rows * cols) * elem;
    group->allGather(mine, all, block);
    // Rank k's columns go to y[:, k * cols, (k + 1) * cols).
    for (int64_t k = 0; k < ranks; ++k) {
      copyRows(be->stream(), static_cast<char*>(y.data) + static_cast<size_t>(k * cols) * elem, y.stride,
               all + static_cast<size_t>(k) * block, cols, rows, cols, elem);
    }
  };
}

BoundOp bindSend(OpBinding& b) {
  const spec::PeerTransfer s = spec::send(b);
  requireDevice(b, s.pipeline);
  CudaBackend* be = &backendOf(b);
  const Matrix v = be->value(s.value);
  const int64_t cols = s.value.cols;
  const size_t elem = dtypeSize(v.dtype);
  const bool pack = !dense(v, cols);
  if (pack) be->reserveScratch(align256(static_cast<size_t>(s.maxRows * cols) * elem));
  comm::Communicator* pipeline = s.pipeline;
  const int peer = s.peer;
  return [=](const StepRuntime& rt) {
    const int64_t rows = s.value.numRows(*rt.step);
    if (rows == 0) return;
    const void* data = v.data;
    if (pack) {
      copyRows(be->stream(), be->scratch(), cols, v.data, v.stride, rows, cols, elem);
      data = be->scratch();
    }
    pipeline->send(data, static_cast<size_t>(rows * cols) * elem, peer);
  };
}

BoundOp bindRecv(OpBinding& b) {
  const spec::PeerTransfer s = spec::recv(b);
  requireDevice(b, s.pipeline);
  CudaBackend* be = &backendOf(b);
  const Matrix v = be->value(s.value);
  const int64_t cols = s.value.cols;
  const size_t elem = dtypeSize(v.dtype);
  const bool unpack = !dense(v, cols);
  if (unpack) be->reserveScratch(align256(static_cast<size_t>(s.maxRows * cols) * elem));
  comm::Communicator* pipeline = s.pipeline;
  const int peer = s.peer;
  return [=](const StepRuntime& rt) {
    const int64_t rows = s.value.numRows(*rt.step);
    if (rows == 0) return;
    void* data = unpack ? be->scratch() : v.data;
    pipeline->recv(data, static_cast<size_t>(rows * cols) * elem, peer);
    if (unpack) copyRows(be->stream(), v.data, v.stride, data, cols, rows, cols, elem);
  };
}

}  // namespace ops
}  // namespace cuda
}  // namespace kiln
