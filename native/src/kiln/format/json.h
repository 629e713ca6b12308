#pragma once
// A small, bounded JSON reader for the headers Kiln parses (safetensors, engines). Untrusted input:
// nesting depth, string length and element counts are capped, and errors carry the byte offset.
#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace kiln {

class JsonError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct JsonLimits {
  int maxDepth = 64;
  size_t maxStringBytes = 1 << 20;
  size_t maxElements = 1 << 22;  // array items + object members over the whole document
  size_t maxContainerSize = SIZE_MAX;  // items of one array, members of one object
};

class Json {
 public:
  enum class Type { Null, Bool, Number, String, Array, Object };

  Type type() const { return type_; }
  bool isNull() const { return type_ == Type::Null; }
  bool isBool() const { return type_ == Type::Bool; }
  bool isNumber() const { return type_ == Type::Number; }
  bool isString() const { return type_ == Type::String; }
  bool isArray() const { return type_ == Type::Array; }
  bool isObject() const { return type_ == Type::Object; }

  bool asBool() const { return bool_; }
  double asNumber() const { return number_; }
  const std::string& asString() const { return string_; }
  const std::vector<Json>& items() const { return items_; }
  // Object members in document order (duplicate keys are rejected by the parser).
  const std::vector<std::pair<std::string, Json>>& members() const { return members_; }
  const Json* find(const std::string& key) const;  // null when absent or not an object

  static Json parse(const char* data, size_t size, const JsonLimits& limits = JsonLimits());

  // Helpers that throw JsonError("<what>: ...") naming the key: `what` is a path for the message,
  // e.g. "header.limits".
  const Json& at(const std::string& key, const std::string& what) const;
  double number(const std::string& key, const std::string& what) const;
  // An integer in [lo, hi] (exact: 3.5 or 1e300 are rejected).
  int64_t integer(const std::string& key, const std::string& what, int64_t lo, int64_t hi) const;
  const std::string& string(const std::string& key, const std::string& what) const;

 private:
  friend class JsonParser;
  Type type_ = Type::Null;
  bool bool_ = false;
  double number_ = 0;
  std::string string_;
  std::vector<Json> items_;
  std::vector<std::pair<std::string, Json>> members_;
};

// `s` as a JSON string literal, quoted and escaped (UTF-8 passes through unchanged).
std::string jsonQuote(const std::string& s);

}  // namespace kiln
