#pragma once
// The CPU backend: weights read straight from the memory map, a host arena, a host KV pool, the
// kernels of kernels/ (portable and AVX2) on a thread pool.
#include <memory>

#include "kiln/runtime/backend.h"
#include "kiln/runtime/kv_cache.h"

namespace kiln {

std::unique_ptr<Backend> makeCpuBackend(const BackendTarget& target);

}  // namespace kiln
