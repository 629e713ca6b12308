#pragma once
// The CUDA backend's communicator for tensor/pipeline-parallel ops (Backend::makeDeviceCommunicator):
// NCCL for everything, except the small all-reduces of decode, which go through a one-shot all-reduce
// over peer memory (kernels/peer_allreduce.cu) when every rank of the group is a GPU of this machine that
// can reach the others' memory (NVLink or PCIe peer access). KILN_CUDA_PEER_ALLREDUCE=0 keeps NCCL only.
#include <cuda_runtime.h>

#include <memory>

#include "kiln/comm/communicator.h"

namespace kiln {
namespace cuda {

// Collective over hostGroup (MPI): every rank of it calls this at the same point.
std::unique_ptr<comm::Communicator> makeDeviceCommunicator(comm::Communicator& hostGroup, int device, cudaStream_t stream);

}  // namespace cuda
}  // namespace kiln
