#pragma once
// The NCCL implementation of comm::Communicator, for CUDA ranks: device buffers, every call enqueued on
// the CUDA backend's stream (so a step's collectives are ordered with its kernels and can be captured
// in its CUDA graphs). Compiled with the CUDA backend where NCCL is found (KILN_NCCL).
#include <cuda_runtime.h>

#include <memory>

#include "kiln/comm/communicator.h"

namespace kiln {
namespace comm {

// A communicator over the same ranks as `hostGroup` (an MPI communicator, which it keeps for what NCCL
// has no call for: allReduceMin and split), on CUDA device `device`, enqueuing on `stream`. Collective
// over hostGroup: rank 0 makes NCCL's unique id and broadcasts it over hostGroup, then every rank joins.
std::unique_ptr<Communicator> makeNcclCommunicator(Communicator& hostGroup, int device, cudaStream_t stream);

}  // namespace comm
}  // namespace kiln
