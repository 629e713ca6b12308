#pragma once
#include "kiln/runtime/kernel_registry.h"

namespace kiln {
namespace cuda {

// Registers every CUDA op adapter (ops/*.cpp) under backend "cuda".
void registerCudaOps(KernelRegistry& registry);

}  // namespace cuda
}  // namespace kiln
