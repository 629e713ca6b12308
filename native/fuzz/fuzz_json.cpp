// libFuzzer target: the bounded JSON reader (kiln/format/json.h) that parses every safetensors and
// engine header. Any input must either parse or throw JsonError; with the parse, the typed accessors
// must throw JsonError or std::runtime_error, never crash.
#include <cstddef>
#include <cstdint>

#include "kiln/format/json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kiln::JsonLimits limits;
  limits.maxElements = 1 << 16;  // keep each run fast; the limit itself is exercised
  try {
    const kiln::Json doc = kiln::Json::parse(reinterpret_cast<const char*>(data), size, limits);
    if (doc.isObject()) {
      for (const auto& m : doc.members()) {
        try {
          (void)doc.integer(m.first, "fuzz", -1000000, 1000000);
        } catch (const std::exception&) {
        }
        try {
          (void)doc.string(m.first, "fuzz");
        } catch (const std::exception&) {
        }
      }
    }
    (void)kiln::jsonQuote(std::string(reinterpret_cast<const char*>(data), size));
  } catch (const kiln::JsonError&) {
  }
  return 0;
}
