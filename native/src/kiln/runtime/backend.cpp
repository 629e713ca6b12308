// makeBackend and queryCuda: the one place that knows which backends this build has.
#include "kiln/runtime/backend.h"

#include <stdexcept>

#include "kiln/backends/cpu/cpu_backend.h"
#ifdef KILN_WITH_CUDA
#include "kiln/backends/cuda/cuda_backend.h"
#endif

namespace kiln {

std::unique_ptr<Backend> makeBackend(const BackendTarget& target, const ModelFacts& facts) {
  if (target.backend == "cpu") return makeCpuBackend(target);
  if (target.backend == "cuda") {
#ifdef KILN_WITH_CUDA
    return cuda::makeCudaBackend(target, facts);
#else
    (void)facts;
    throw std::runtime_error(
        "the engine targets cuda (compute capability " + target.computeCapability +
        ") but this build of @kiln/native has no CUDA backend (it was built without a CUDA toolkit with cuBLASLt): "
        "rebuild @kiln/native with KILN_CUDA=on on a machine with the CUDA toolkit, or build the engine with "
        "`kiln build --target cpu`");
#endif
  }
  throw std::runtime_error("header.target.backend \"" + target.backend +
                           "\" is not supported by this runtime (expected \"cpu\" or \"cuda\")");
}

CudaInfo queryCuda() {
#ifdef KILN_WITH_CUDA
  return cuda::queryDevices();
#else
  CudaInfo info;
  info.compiled = false;
  info.error = "this build of @kiln/native has no CUDA backend";
  return info;
#endif
}

void sampleRowsOnCuda(const sampling::SampleRow* rows, int64_t numRows, int64_t vocab, sampling::SampleOutput* out) {
#ifdef KILN_WITH_CUDA
  cuda::sampleRowsForTest(rows, numRows, vocab, out);
#else
  (void)rows, (void)numRows, (void)vocab, (void)out;
  throw std::runtime_error("this build of @kiln/native has no CUDA backend");
#endif
}

}  // namespace kiln
