// The process-wide switch for programmatic dependent launch (common.cuh's `launch`), read once.
#include <cstdlib>
#include <cstring>

#include "kiln/backends/cuda/kernels/common.cuh"

namespace kiln {
namespace cuda {

bool pdlEnabled() {
  static const bool enabled = [] {
    const char* setting = std::getenv("KILN_CUDA_PDL");
    return !(setting && std::strcmp(setting, "0") == 0);
  }();
  return enabled;
}

}  // namespace cuda
}  // namespace kiln
