#pragma once
// Writing GGUF files (the export `kiln export-gguf` does): metadata given by the caller (the TypeScript
// side knows llama.cpp's keys), tensors read from safetensors files (a Kiln checkpoint), optionally
// row-permuted for llama.cpp's rope, and cast or quantized to a ggml type row by row.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "kiln/format/ggml_quants.h"
#include "kiln/format/gguf.h"

namespace kiln {

struct GgufTensorSource {
  std::string file;            // a safetensors file (F32, F16 or BF16 tensors)
  std::string tensor;          // the tensor's name there
};

struct GgufTensorWriteSpec {
  std::string name;            // the GGUF tensor name
  GgmlType type = GgmlType::F32;
  // Concatenated along dimension 0 (llama.cpp fuses what Kiln keeps apart, e.g. Phi-3's q/k/v); every
  // source has the same trailing dimensions.
  std::vector<GgufTensorSource> sources;
  // > 0: the q/k rows are permuted as llama.cpp's convert_hf_to_gguf.py LlamaModel.permute does for this
  // many heads (HF's rotate-half rope rows to llama.cpp's adjacent-pair rope rows).
  uint32_t permuteHeads = 0;
  // Added to every value before it is cast or quantized: +1 for Gemma's norm weights (llama.cpp's
  // converter stores 1 + w, the factor its RMSNorm multiplies by).
  float valueOffset = 0.0f;
};

// What quantizing one tensor cost: root-mean-square of the weights and of the error, and the largest error.
struct GgufTensorError {
  std::string name;
  double rms = 0;
  double rmsError = 0;
  double maxAbsError = 0;
};

struct GgufWriteResult {
  uint64_t fileSize = 0;
  std::vector<GgufTensorError> errors;  // one per tensor, in order
};

// Writes the file atomically (temporary file renamed into place; removed on failure). Every tensor's
// innermost dimension must be whole blocks of its type. Throws std::runtime_error naming the output, the
// tensor and its source.
GgufWriteResult writeGguf(const std::string& path, const std::vector<std::pair<std::string, GgufValue>>& metadata,
                          const std::vector<GgufTensorWriteSpec>& tensors, uint32_t alignment = 32);

// llama.cpp's rope row permutation of a [heads * headRows, ...] matrix: row h*headRows + 2j + s of the
// result is row h*headRows + s*headRows/2 + j of the source. `inverse` gives the source row of the
// un-permuted result instead (the import direction).
uint64_t ropePermutedRow(uint64_t row, uint64_t rows, uint32_t heads, bool inverse);

}  // namespace kiln
