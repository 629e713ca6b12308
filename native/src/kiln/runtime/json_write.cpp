#include "kiln/runtime/json_write.h"

#include "kiln/format/json.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace kiln {

namespace {

void writeString(const std::string& s, std::string& out) { out += jsonQuote(s); }

void writeNumber(double d, std::string& out) {
  if (!std::isfinite(d)) {  // the parser never produces these; JSON has no spelling for them
    out += "null";
    return;
  }
  char buf[32];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, d);
    if (std::strtod(buf, nullptr) == d) break;
  }
  out += buf;
}

void write(const Json& v, std::string& out) {
  switch (v.type()) {
    case Json::Type::Null: out += "null"; break;
    case Json::Type::Bool: out += v.asBool() ? "true" : "false"; break;
    case Json::Type::Number: writeNumber(v.asNumber(), out); break;
    case Json::Type::String: writeString(v.asString(), out); break;
    case Json::Type::Array: {
      out += '[';
      bool first = true;
      for (const Json& item : v.items()) {
        if (!first) out += ',';
        first = false;
        write(item, out);
      }
      out += ']';
      break;
    }
    case Json::Type::Object: {
      out += '{';
      bool first = true;
      for (const auto& m : v.members()) {
        if (!first) out += ',';
        first = false;
        writeString(m.first, out);
        out += ':';
        write(m.second, out);
      }
      out += '}';
      break;
    }
  }
}

}  // namespace

std::string writeJson(const Json& value) {
  std::string out;
  write(value, out);
  return out;
}

}  // namespace kiln
