#pragma once
// Checks of an engine header beyond the shape of each entry, kept out of engine.cpp.
#include <cstdint>
#include <vector>

#include "kiln/format/json.h"
#include "kiln/runtime/kernel_registry.h"

namespace kiln {

// Checks that the ops, in their order, only read arena bytes that an earlier op wrote as (part of) one
// value and that no later write clobbered since, and that no op writes over its own inputs. The
// builder's memory plan guarantees all of this; an engine whose ops were reordered (with its checksum
// recomputed) ran and produced garbage (issue 16), and is refused here naming the op and the values.
// `ops` is the header's ops array, its indices already checked against `values`.
void checkOpDataflow(const Json& ops, const std::vector<ValueRef>& values, int64_t maxNumTokens, int64_t maxLogitRows);

}  // namespace kiln
