#pragma once
// Serializes a parsed Json back to compact JSON text (for handing the header's `model` object to
// JavaScript). Numbers use the shortest form that reads back to the same double.
#include <string>

#include "kiln/format/json.h"

namespace kiln {

std::string writeJson(const Json& value);

}  // namespace kiln
