#pragma once
// CUDA runtime errors become std::runtime_error naming the call.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace kiln {
namespace cuda {

inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorName(status) + " (" +
                             cudaGetErrorString(status) + ")");
  }
}

}  // namespace cuda
}  // namespace kiln
