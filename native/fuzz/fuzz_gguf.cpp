// libFuzzer target: the GGUF reader (kiln/format/gguf.h) on whole files, then the import path of
// `kiln convert --model file.gguf` (every tensor it accepted dequantized, some with the rope
// un-permutation, into a safetensors file). Untrusted files must be refused with std::runtime_error,
// never crash, hang, over-allocate or read out of bounds.
#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "fuzz_util.h"
#include "kiln/format/gguf.h"
#include "kiln/format/gguf_import.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = kiln_fuzz::scratchPath("gguf");
  const std::string out = path + ".safetensors";
  kiln_fuzz::writeFile(path, data, size);
  try {
    kiln::GgufFile file(path);
    std::vector<kiln::GgufImportSpec> specs;
    uint64_t budget = 1 << 20;  // elements dequantized per input: keeps every run short
    for (const auto& t : file.tensors()) {
      uint64_t elements = 1;
      for (int64_t d : t.dims) elements *= static_cast<uint64_t>(d);
      if (elements > budget) break;
      budget -= elements;
      kiln::GgufImportSpec spec;
      spec.name = "t" + std::to_string(specs.size());
      spec.tensor = t.name;
      spec.dtype = (size & 1) ? kiln::DType::BF16 : kiln::DType::F32;
      spec.unpermuteHeads = (size & 2) && t.dims.size() == 2 ? 1 + (size >> 2) % 4 : 0;
      specs.push_back(spec);
    }
    try {
      kiln::writeSafetensorsFromGguf(path, out, {}, specs, (size & 4) != 0);
    } catch (const std::runtime_error&) {
    }
  } catch (const std::runtime_error&) {
  }
  return 0;
}
