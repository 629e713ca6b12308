#include "kiln/runtime/engine_checks.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace kiln {

namespace {

// The arena bytes of a value at the most rows a step can have: rows [0, rows) of `width` bytes each,
// row r starting at offset + r * stride. A value whose rows are adjacent (stride == width) is one row.
struct Footprint {
  int64_t offset = 0, stride = 0, width = 0, rows = 0;
  int64_t end() const { return offset + (rows - 1) * stride + width; }
};

Footprint footprintOf(const ValueRef& v, int64_t maxNumTokens, int64_t maxLogitRows) {
  const int64_t size = static_cast<int64_t>(dtypeSize(v.dtype));
  Footprint f{v.byteOffset, v.rowStride * size, v.cols * size, v.rows == RowsKind::Tokens ? maxNumTokens : maxLogitRows};
  if (f.stride == f.width || f.rows == 1) f = {f.offset, f.width * f.rows, f.width * f.rows, 1};
  return f;
}

int64_t floorDiv(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

// Whether row interval [lo, hi) meets some row of strided `s`.
bool meetsRows(const Footprint& s, int64_t lo, int64_t hi) {
  // Row r spans [o + r*S, o + r*S + W): it meets [lo, hi) iff o + r*S < hi and o + r*S + W > lo.
  const int64_t first = std::max<int64_t>(0, floorDiv(lo - s.width - s.offset, s.stride) + 1);
  const int64_t last = std::min<int64_t>(s.rows - 1, floorDiv(hi - 1 - s.offset, s.stride));
  return first <= last;
}

bool overlaps(const Footprint& a, const Footprint& b, int64_t* work) {
  if (a.end() <= b.offset || b.end() <= a.offset) return false;
  if (a.rows == 1) return meetsRows(b.rows == 1 ? Footprint{b.offset, b.width, b.width, 1} : b, a.offset, a.end());
  if (b.rows == 1) return meetsRows(a, b.offset, b.end());
  if (a.stride == b.stride) {
    // Rows r1 of a and r2 of b meet iff -Wb < d + k*S < Wa with d = ob - oa and k = r2 - r1.
    const int64_t d = b.offset - a.offset, s = a.stride;
    const int64_t kLo = std::max<int64_t>(-(b.rows - 1), floorDiv(-b.width - d, s) + 1);
    const int64_t kHi = std::min<int64_t>(a.rows - 1, floorDiv(a.width - d - 1, s));
    for (int64_t k = kLo; k <= kHi; ++k) {
      // k fixes the distance; some pair of rows with that distance exists when both stay in range.
      if (std::max<int64_t>(0, -k) <= std::min<int64_t>(a.rows - 1, b.rows - 1 - k)) return true;
      if (++*work > (int64_t(1) << 27)) break;
    }
    return false;
  }
  // Different strides (the builder never makes these): row by row of the shorter one.
  const Footprint& few = a.rows <= b.rows ? a : b;
  const Footprint& other = a.rows <= b.rows ? b : a;
  for (int64_t r = 0; r < few.rows; ++r) {
    if (meetsRows(other, few.offset + r * few.stride, few.offset + r * few.stride + few.width)) return true;
    if (++*work > (int64_t(1) << 27)) return true;
  }
  return false;
}

// Whether every byte of `v` is a byte of `w`.
bool contains(const Footprint& w, const Footprint& v) {
  if (w.rows == 1) return w.offset <= v.offset && v.end() <= w.end();
  const int64_t k = floorDiv(v.offset - w.offset, w.stride);
  const int64_t column = v.offset - w.offset - k * w.stride;
  if (v.offset < w.offset || column + (v.rows == 1 ? v.width : v.width) > w.width) return false;
  if (v.rows == 1) return k < w.rows;
  return v.stride == w.stride && k + v.rows <= w.rows;
}

std::string describe(const std::vector<ValueRef>& values, int32_t index) {
  const ValueRef& v = values[static_cast<size_t>(index)];
  return "value " + std::to_string(index) + (v.name.empty() ? std::string() : " (\"" + v.name + "\")");
}

std::vector<int32_t> indices(const Json& op, const char* key) {
  std::vector<int32_t> out;
  if (const Json* list = op.find(key)) {
    for (const Json& item : list->items()) out.push_back(static_cast<int32_t>(item.asNumber()));
  }
  return out;
}

}  // namespace

void checkOpDataflow(const Json& ops, const std::vector<ValueRef>& values, int64_t maxNumTokens, int64_t maxLogitRows) {
  struct Write {
    Footprint at;
    int32_t value;
    size_t op;
  };
  std::vector<Footprint> footprints;
  footprints.reserve(values.size());
  for (const ValueRef& v : values) footprints.push_back(footprintOf(v, maxNumTokens, maxLogitRows));
  // Values some op writes must be read from that very write; the others are views (column slices
  // such as q, k and v of a fused projection) and must be read from a write of a buffer holding them
  // with the same row stride.
  std::vector<bool> written(values.size(), false);
  for (const Json& op : ops.items()) {
    for (int32_t out : indices(op, "outputs")) written[static_cast<size_t>(out)] = true;
  }
  std::vector<Write> writes;
  // A hostile header could make the backward scans quadratic; a real engine needs a tiny fraction of
  // this (ops x the distance from a producer to its consumers).
  constexpr int64_t kMaxWork = int64_t(1) << 28;
  int64_t work = 0;
  for (size_t i = 0; i < ops.items().size(); ++i) {
    const Json& op = ops.items()[i];
    const std::string prefix = "header.ops[" + std::to_string(i) + "] (" + op.string("op", "header.ops") + ") ";
    const std::vector<int32_t> inputs = indices(op, "inputs");
    const std::vector<int32_t> outputs = indices(op, "outputs");
    for (int32_t in : inputs) {
      const Footprint& v = footprints[static_cast<size_t>(in)];
      // The most recent write that touched any byte of the input must hold all of it.
      const Write* last = nullptr;
      for (size_t j = writes.size(); j-- > 0;) {
        if (++work > kMaxWork) throw std::runtime_error(prefix + ": the ops' dataflow is too large to check");
        if (overlaps(writes[j].at, v, &work)) {
          last = &writes[j];
          break;
        }
      }
      if (!last) {
        throw std::runtime_error(prefix + "reads " + describe(values, in) + ", which no earlier op wrote: the ops are not in dependency order");
      }
      if (written[static_cast<size_t>(in)] && last->value != in) {
        throw std::runtime_error(prefix + "reads " + describe(values, in) + ", but the last write to its bytes was " +
                                 describe(values, last->value) + " (op " + std::to_string(last->op) +
                                 "): the ops are not in dependency order, or not in an order their memory plan allows");
      }
      if (!contains(last->at, v) || (v.rows > 1 && last->at.rows > 1 && last->at.stride != v.stride) ||
          (v.rows > 1 && last->at.rows == 1 && last->at.width != v.stride * v.rows)) {
        throw std::runtime_error(prefix + "reads " + describe(values, in) + ", but the last write to its bytes was " +
                                 describe(values, last->value) + " (op " + std::to_string(last->op) +
                                 "), which does not hold all of it: the ops are not in an order their memory plan allows");
      }
    }
    for (int32_t out : outputs) {
      for (int32_t in : inputs) {
        if (overlaps(footprints[static_cast<size_t>(out)], footprints[static_cast<size_t>(in)], &work)) {
          throw std::runtime_error(prefix + "writes " + describe(values, out) + " over the bytes of its own input " + describe(values, in));
        }
      }
      writes.push_back({footprints[static_cast<size_t>(out)], out, i});
    }
  }
}

}  // namespace kiln
