#pragma once
// The collectives of tensor and pipeline parallelism, behind one interface with one implementation per
// transport: MPI for CPU ranks (mpi_communicator.cpp, compiled where an MPI library is found) and NCCL
// for CUDA ranks (to come: its unique id is broadcast over the MPI communicator of the same ranks, see
// `broadcast`). Buffers are host memory for MPI and device memory on the backend's stream for NCCL
// (`deviceBuffers`); callers never mix the two. Every call is blocking for the caller's thread on MPI
// and ordered on the stream for NCCL, and all ranks of the communicator must make the same calls in the
// same order (the runtime guarantees it: rank 0 broadcasts each step, the others follow it).
// Design: docs/decisions/0010-tensor-and-pipeline-parallelism.md.
#include <cstddef>
#include <cstdint>
#include <memory>

#include "kiln/dtype.h"

namespace kiln {
namespace comm {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual const char* transport() const = 0;  // "mpi" or "nccl"
  virtual int rank() const = 0;               // this process's rank in the communicator
  virtual int size() const = 0;
  // True when the buffers passed in are device memory (NCCL), false for host memory (MPI).
  virtual bool deviceBuffers() const = 0;

  // recv[0, count) = the sum over every rank's send[0, count); send may be recv (in place). float32,
  // float16 or bfloat16 (16-bit sums are accumulated by the transport's own rules: MPI sums float32 only,
  // see mpi_communicator.cpp). Every rank gets the same values.
  virtual void allReduceSum(const void* send, void* recv, size_t count, DType dtype) = 0;
  // recv[r * bytes, (r + 1) * bytes) = rank r's send[0, bytes), for every rank r.
  virtual void allGather(const void* send, void* recv, size_t bytes) = 0;
  // Every rank's data[0, bytes) = the root's.
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  // Point to point (pipeline stages): blocking until the peer has matched it on MPI.
  virtual void send(const void* data, size_t bytes, int peer) = 0;
  virtual void recv(void* data, size_t bytes, int peer) = 0;
  // The smallest of every rank's value (host values, both transports: used at load time).
  virtual int64_t allReduceMin(int64_t value) = 0;

  // A communicator over the ranks that pass the same `color`, ordered by `key` (MPI_Comm_split): the
  // tensor-parallel group of a pipeline stage.
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;
};

}  // namespace comm
}  // namespace kiln
