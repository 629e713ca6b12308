#pragma once
// Small helpers that render values for error messages, shared by the format readers and writers.
#include <cstdint>
#include <string>
#include <vector>

namespace kiln {

inline std::string shapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// Element count of a shape, or false on overflow past 2^53 (the largest size JavaScript can carry).
inline bool shapeElements(const std::vector<int64_t>& shape, uint64_t* out) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return false;
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n) || n > (1ull << 53)) return false;
  }
  *out = n;
  return true;
}

}  // namespace kiln
