// libFuzzer target: the safetensors reader (kiln/format/safetensors.h) on whole files, then a gather
// of every tensor it accepted (the path `kiln convert` takes, casting to bfloat16 with the non-finite
// check on). Untrusted files must be refused with std::runtime_error, never crash, hang or read out of
// bounds.
#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "fuzz_util.h"
#include "kiln/format/safetensors.h"
#include "kiln/format/safetensors_writer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = kiln_fuzz::scratchPath("safetensors");
  kiln_fuzz::writeFile(path, data, size);
  try {
    kiln::SafetensorsFile file(path);
    kiln::TensorGatherer gatherer;
    gatherer.rejectNonFinite = (size & 1) != 0;
    size_t budget = 1 << 20;  // elements gathered per input: keeps every run short
    for (const auto& t : file.tensors()) {
      uint64_t elements = 1;
      for (int64_t d : t.shape) elements *= static_cast<uint64_t>(d);
      if (elements > budget) break;
      budget -= static_cast<size_t>(elements);
      kiln::TensorWriteSpec spec;
      spec.name = "out";
      spec.dtype = kiln::DType::BF16;
      spec.shape = t.shape;
      kiln::TensorSourceSpec source;
      source.file = path;
      source.tensor = t.name;
      source.transpose = t.shape.size() == 2 && (size & 2) != 0;
      if (source.transpose) std::swap(spec.shape[0], spec.shape[1]);
      spec.sources.push_back(source);
      try {
        gatherer.check("fuzz", spec);
        uint64_t sum = 0;
        gatherer.gather("fuzz", spec, [&](const void* bytes, size_t n) { sum += n ? static_cast<const uint8_t*>(bytes)[n - 1] : 0; });
        (void)sum;
      } catch (const std::runtime_error&) {
      }
    }
  } catch (const std::runtime_error&) {
  }
  return 0;
}
