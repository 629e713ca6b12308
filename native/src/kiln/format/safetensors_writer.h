#pragma once
// Writing safetensors files whose tensors are gathered from other safetensors files: each output tensor
// concatenates its sources along dimension 0, each source optionally transposed (2-D) then row-sliced,
// and everything is cast to the output dtype (round to nearest even). Mirrors `WriteSafetensorsOptions`
// in native/lib/types.ts. The engine writer (engine_file.h) gathers its weights the same way.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kiln/dtype.h"
#include "kiln/format/safetensors.h"

namespace kiln {

struct TensorSourceSpec {
  std::string file;
  std::string tensor;
  bool transpose = false;  // 2-D only, applied before the row slice
  int64_t rowStart = 0;
  int64_t rowCount = -1;   // -1: every row from rowStart
};

struct TensorWriteSpec {
  std::string name;
  DType dtype = DType::F32;  // F32, F16 or BF16
  std::vector<int64_t> shape;
  std::vector<TensorSourceSpec> sources;
};

// Opens each source file once (a converter reads hundreds of tensors from a few shards) and streams
// output tensors in bounded chunks, so no tensor is ever held whole in memory.
class TensorGatherer {
 public:
  // When set, gather() throws on the first NaN or infinite source element, naming the tensor, its
  // source and the element: a checkpoint with such weights converts, builds and then generates token 0
  // forever (issue 16), so conversion refuses it unless asked not to.
  bool rejectNonFinite = false;

  // Checks that `spec` can be written: sources exist and are F32/F16/BF16, transposes are 2-D, row
  // ranges are inside their tensors, and the gathered element count equals the product of `shape`.
  // Throws std::runtime_error starting with `context` (the output path) and naming the tensor.
  void check(const std::string& context, const TensorWriteSpec& spec);
  // Streams the output bytes of a checked spec, in order, to `sink`.
  void gather(const std::string& context, const TensorWriteSpec& spec,
              const std::function<void(const void*, size_t)>& sink);

 private:
  struct Plan;
  Plan plan(const std::string& context, const TensorWriteSpec& spec, const TensorSourceSpec& src);
  const SafetensorsFile& open(const std::string& path);
  std::map<std::string, std::unique_ptr<SafetensorsFile>> files_;
};

// Casts float32 values to `out` (F32, F16 or BF16), writing n elements of dtypeSize(out) bytes to dst.
void castFromF32(const float* src, size_t n, DType out, void* dst);

// Writes a safetensors file atomically (a temporary file renamed into place; removed on failure).
// Tensors are stored contiguously in the given order, the data region starting on a 64-byte boundary.
void writeSafetensors(const std::string& path, const std::map<std::string, std::string>& metadata,
                      const std::vector<TensorWriteSpec>& tensors, bool rejectNonFinite = false);

}  // namespace kiln
