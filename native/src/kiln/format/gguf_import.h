#pragma once
// Reading GGUF tensors into a safetensors file (the import `kiln convert --model file.gguf` does): each
// output tensor is one GGUF tensor, dequantized row by row to F32, F16 or BF16, optionally with
// llama.cpp's q/k rope permutation undone. The TypeScript side names the tensors; the rest of the
// conversion reads the result like any Hugging Face checkpoint.
#include <map>
#include <string>
#include <vector>

#include "kiln/dtype.h"

namespace kiln {

struct GgufImportSpec {
  std::string name;              // the output (Hugging Face) tensor name
  std::string tensor;            // the GGUF tensor name
  DType dtype = DType::F32;      // F32, F16 or BF16
  uint32_t unpermuteHeads = 0;   // > 0: undo llama.cpp's rope permutation for this many heads
  // Added to every dequantized value: -1 for Gemma's norm weights, which llama.cpp stores as 1 + w.
  float valueOffset = 0.0f;
  // Write the 2-D tensor transposed ([out, in] in the file, [in, out] out): GPT-2's Conv1D weights, which
  // llama.cpp's converter transposes.
  bool transpose = false;
};

// Writes `outPath` atomically. With rejectNonFinite, a NaN or infinite dequantized value is refused,
// naming the tensor and element. Throws std::runtime_error naming the GGUF file and the tensor at fault.
void writeSafetensorsFromGguf(const std::string& ggufPath, const std::string& outPath,
                              const std::map<std::string, std::string>& metadata,
                              const std::vector<GgufImportSpec>& tensors, bool rejectNonFinite);

}  // namespace kiln
