#include "kiln/format/json.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace kiln {

// Recursive descent over a byte range. Every loop and every allocation is bounded by the input size or
// by JsonLimits, so a hostile header can cost at most O(size) time and memory.
class JsonParser {
 public:
  JsonParser(const char* data, size_t size, const JsonLimits& limits)
      : p_(data), begin_(data), end_(data + size), limits_(limits) {}

  Json parseDocument() {
    Json root;
    skipSpace();
    parseValue(root, 0);
    skipSpace();
    if (p_ != end_) fail("unexpected data after the JSON value");
    return root;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw JsonError(what + " at byte " + std::to_string(p_ - begin_));
  }

  void skipSpace() {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }

  void countElement() {
    if (++elements_ > limits_.maxElements) {
      fail("more than " + std::to_string(limits_.maxElements) + " array items and object members");
    }
  }

  void expectLiteral(const char* word) {
    const size_t n = std::strlen(word);
    if (static_cast<size_t>(end_ - p_) < n || std::memcmp(p_, word, n) != 0) fail("invalid literal");
    p_ += n;
  }

  void parseValue(Json& out, int depth) {
    if (p_ == end_) fail("unexpected end of input");
    switch (*p_) {
      case '{': parseObject(out, depth + 1); return;
      case '[': parseArray(out, depth + 1); return;
      case '"':
        out.type_ = Json::Type::String;
        parseString(out.string_);
        return;
      case 't':
        expectLiteral("true");
        out.type_ = Json::Type::Bool;
        out.bool_ = true;
        return;
      case 'f':
        expectLiteral("false");
        out.type_ = Json::Type::Bool;
        out.bool_ = false;
        return;
      case 'n':
        expectLiteral("null");
        out.type_ = Json::Type::Null;
        return;
      default:
        if (*p_ == '-' || (*p_ >= '0' && *p_ <= '9')) {
          out.type_ = Json::Type::Number;
          out.number_ = parseNumber();
          return;
        }
        fail(std::string("unexpected character '") + printable(*p_) + "'");
    }
  }

  static std::string printable(char c) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f) return std::string(1, c);
    static const char* hex = "0123456789abcdef";
    return std::string("\\x") + hex[u >> 4] + hex[u & 15];
  }

  void checkDepth(int depth) {
    if (depth > limits_.maxDepth) fail("nesting deeper than " + std::to_string(limits_.maxDepth) + " levels");
  }

  void parseArray(Json& out, int depth) {
    checkDepth(depth);
    out.type_ = Json::Type::Array;
    ++p_;  // '['
    skipSpace();
    if (p_ != end_ && *p_ == ']') {
      ++p_;
      return;
    }
    for (;;) {
      countElement();
      if (out.items_.size() == limits_.maxContainerSize) {
        fail("an array has more than " + std::to_string(limits_.maxContainerSize) + " items");
      }
      out.items_.emplace_back();
      skipSpace();
      parseValue(out.items_.back(), depth);
      skipSpace();
      if (p_ == end_) fail("unterminated array");
      if (*p_ == ',') {
        ++p_;
        continue;
      }
      if (*p_ == ']') {
        ++p_;
        return;
      }
      fail("expected ',' or ']' in array");
    }
  }

  void parseObject(Json& out, int depth) {
    checkDepth(depth);
    out.type_ = Json::Type::Object;
    ++p_;  // '{'
    skipSpace();
    if (p_ != end_ && *p_ == '}') {
      ++p_;
      return;
    }
    for (;;) {
      countElement();
      skipSpace();
      if (p_ == end_ || *p_ != '"') fail("expected a string key in object");
      if (out.members_.size() == limits_.maxContainerSize) {
        fail("an object has more than " + std::to_string(limits_.maxContainerSize) + " members");
      }
      out.members_.emplace_back();
      parseString(out.members_.back().first);
      skipSpace();
      if (p_ == end_ || *p_ != ':') fail("expected ':' after object key");
      ++p_;
      skipSpace();
      parseValue(out.members_.back().second, depth);
      skipSpace();
      if (p_ == end_) fail("unterminated object");
      if (*p_ == ',') {
        ++p_;
        continue;
      }
      if (*p_ == '}') {
        ++p_;
        break;
      }
      fail("expected ',' or '}' in object");
    }
    rejectDuplicateKeys(out);
  }

  // Sorting indices costs O(n log n) even for objects with many thousands of keys (safetensors headers),
  // where a pairwise scan would be quadratic.
  void rejectDuplicateKeys(const Json& obj) const {
    const auto& m = obj.members_;
    if (m.size() < 2) return;
    std::vector<size_t> order(m.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return m[a].first < m[b].first; });
    for (size_t i = 1; i < order.size(); ++i) {
      if (m[order[i]].first == m[order[i - 1]].first) {
        throw JsonError("duplicate key \"" + m[order[i]].first + "\" in object");
      }
    }
  }

  static int hexDigit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  uint32_t parseHex4() {
    if (end_ - p_ < 4) fail("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const int d = hexDigit(p_[i]);
      if (d < 0) fail("invalid \\u escape");
      v = (v << 4) | static_cast<uint32_t>(d);
    }
    p_ += 4;
    return v;
  }

  static void appendUtf8(std::string& s, uint32_t cp) {
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else if (cp < 0x800) {
      s += static_cast<char>(0xc0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      s += static_cast<char>(0xe0 | (cp >> 12));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      s += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
      s += static_cast<char>(0xf0 | (cp >> 18));
      s += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      s += static_cast<char>(0x80 | (cp & 0x3f));
    }
  }

  // Length of the well-formed UTF-8 sequence at p_ (RFC 3629: no overlongs, no surrogates, <= U+10FFFF),
  // or 0 when it is malformed.
  size_t utf8SequenceLength() const {
    const auto* s = reinterpret_cast<const unsigned char*>(p_);
    const size_t avail = static_cast<size_t>(end_ - p_);
    const unsigned char c = s[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf;  // allowed range of the second byte
    if (c >= 0xc2 && c <= 0xdf) {
      n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 3;
      if (c == 0xe0) lo = 0xa0;
      if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 4;
      if (c == 0xf0) lo = 0x90;
      if (c == 0xf4) hi = 0x8f;
    } else {
      return 0;
    }
    if (avail < n) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < n; ++i) {
      if (s[i] < 0x80 || s[i] > 0xbf) return 0;
    }
    return n;
  }

  void parseString(std::string& out) {
    ++p_;  // opening quote
    for (;;) {
      if (p_ == end_) fail("unterminated string");
      if (out.size() > limits_.maxStringBytes) {
        fail("string longer than " + std::to_string(limits_.maxStringBytes) + " bytes");
      }
      const unsigned char c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        ++p_;
        return;
      }
      if (c < 0x20) fail("unescaped control character in string");
      if (c == '\\') {
        ++p_;
        if (p_ == end_) fail("unterminated string");
        const char e = *p_++;
        switch (e) {
          case '"': out += '"'; break;
          case '\\': out += '\\'; break;
          case '/': out += '/'; break;
          case 'b': out += '\b'; break;
          case 'f': out += '\f'; break;
          case 'n': out += '\n'; break;
          case 'r': out += '\r'; break;
          case 't': out += '\t'; break;
          case 'u': {
            uint32_t cp = parseHex4();
            if (cp >= 0xdc00 && cp <= 0xdfff) fail("unpaired low surrogate in \\u escape");
            if (cp >= 0xd800 && cp <= 0xdbff) {
              if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') fail("unpaired high surrogate in \\u escape");
              p_ += 2;
              const uint32_t low = parseHex4();
              if (low < 0xdc00 || low > 0xdfff) fail("invalid low surrogate in \\u escape");
              cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
            }
            appendUtf8(out, cp);
            break;
          }
          default:
            --p_;
            fail(std::string("invalid escape '\\") + printable(e) + "'");
        }
        continue;
      }
      if (c < 0x80) {
        out += static_cast<char>(c);
        ++p_;
        continue;
      }
      const size_t n = utf8SequenceLength();
      if (n == 0) fail("invalid UTF-8 in string");
      out.append(p_, n);
      p_ += n;
    }
  }

  // Checks the JSON number grammar, then converts a bounded copy with strtod (the input is not
  // NUL-terminated, and strtod would accept forms JSON does not: hex, inf, leading '+').
  double parseNumber() {
    const char* start = p_;
    auto digits = [&]() {
      const char* d = p_;
      while (p_ != end_ && *p_ >= '0' && *p_ <= '9') ++p_;
      return p_ - d;
    };
    if (*p_ == '-') ++p_;
    if (p_ == end_) fail("invalid number");
    if (*p_ == '0') {
      ++p_;
    } else if (digits() == 0) {
      fail("invalid number");
    }
    if (p_ != end_ && *p_ == '.') {
      ++p_;
      if (digits() == 0) fail("invalid number: no digits after '.'");
    }
    if (p_ != end_ && (*p_ == 'e' || *p_ == 'E')) {
      ++p_;
      if (p_ != end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (digits() == 0) fail("invalid number: no digits in exponent");
    }
    const size_t len = static_cast<size_t>(p_ - start);
    constexpr size_t kMaxNumberChars = 400;
    if (len > kMaxNumberChars) {
      p_ = start;
      fail("number longer than " + std::to_string(kMaxNumberChars) + " characters");
    }
    char buf[kMaxNumberChars + 1];
    std::memcpy(buf, start, len);
    buf[len] = '\0';
    const double v = std::strtod(buf, nullptr);
    if (!std::isfinite(v)) {
      p_ = start;
      fail("number out of range");
    }
    return v;
  }

  const char* p_;
  const char* begin_;
  const char* end_;
  JsonLimits limits_;
  size_t elements_ = 0;
};

Json Json::parse(const char* data, size_t size, const JsonLimits& limits) {
  return JsonParser(data, size, limits).parseDocument();
}

const Json* Json::find(const std::string& key) const {
  if (type_ != Type::Object) return nullptr;
  for (const auto& m : members_) {
    if (m.first == key) return &m.second;
  }
  return nullptr;
}

const Json& Json::at(const std::string& key, const std::string& what) const {
  if (type_ != Type::Object) throw JsonError(what + ": expected an object");
  const Json* v = find(key);
  if (!v) throw JsonError(what + ": missing key \"" + key + "\"");
  return *v;
}

double Json::number(const std::string& key, const std::string& what) const {
  const Json& v = at(key, what);
  if (!v.isNumber()) throw JsonError(what + "." + key + ": expected a number");
  return v.asNumber();
}

int64_t Json::integer(const std::string& key, const std::string& what, int64_t lo, int64_t hi) const {
  const Json& v = at(key, what);
  const std::string range = "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  if (!v.isNumber()) throw JsonError(what + "." + key + ": expected an integer in " + range);
  const double d = v.asNumber();
  // Compare as doubles first: casting an out-of-range double to int64 is undefined behaviour.
  if (d != std::floor(d) || d < static_cast<double>(lo) || d > static_cast<double>(hi) ||
      std::fabs(d) > 9007199254740992.0) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", d);
    throw JsonError(what + "." + key + ": expected an integer in " + range + ", got " + buf);
  }
  return static_cast<int64_t>(d);
}

const std::string& Json::string(const std::string& key, const std::string& what) const {
  const Json& v = at(key, what);
  if (!v.isString()) throw JsonError(what + "." + key + ": expected a string");
  return v.asString();
}

// Quotes and escapes a string for JSON output (UTF-8 passes through unchanged).
std::string jsonQuote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          static const char* hex = "0123456789abcdef";
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

}  // namespace kiln
