// The JSON reader of json.h: a recursive-descent parser over the whole text.
#include "json.h"

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace edgesdk {
namespace json {

const char* Value::kind_name() const {
  switch (kind_) {
    case Kind::Null: return "null";
    case Kind::Bool: return "a boolean";
    case Kind::Number: return "a number";
    case Kind::String: return "a string";
    case Kind::Array: return "an array";
    case Kind::Object: return "an object";
  }
  return "?";
}

namespace {
[[noreturn]] void wrong(const Value& v, const std::string& path, const char* want) {
  throw Error(path + ": expected " + want + ", got " + v.kind_name());
}
}  // namespace

bool Value::as_bool(const std::string& path) const {
  if (kind_ != Kind::Bool) wrong(*this, path, "a boolean");
  return bool_;
}

double Value::as_number(const std::string& path) const {
  if (kind_ != Kind::Number) wrong(*this, path, "a number");
  return number_;
}

int64_t Value::as_int(const std::string& path) const {
  const double d = as_number(path);
  if (d != std::floor(d) || std::fabs(d) > 9.0e15) throw Error(path + ": expected an integer, got " + std::to_string(d));
  return static_cast<int64_t>(d);
}

const std::string& Value::as_string(const std::string& path) const {
  if (kind_ != Kind::String) wrong(*this, path, "a string");
  return string_;
}

const std::vector<Value>& Value::as_array(const std::string& path) const {
  if (kind_ != Kind::Array) wrong(*this, path, "an array");
  return array_;
}

const std::vector<std::pair<std::string, Value>>& Value::as_object(const std::string& path) const {
  if (kind_ != Kind::Object) wrong(*this, path, "an object");
  return object_;
}

const Value* Value::find(const std::string& key) const {
  for (const auto& kv : object_)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

class Parser {
 public:
  explicit Parser(const std::string& text) : s_(text) {}

  Value document() {
    Value v = value(0);
    space();
    if (i_ != s_.size()) fail("unexpected text after the JSON value");
    return v;
  }

 private:
  static constexpr int kMaxDepth = 256;  // bounds the recursion on hostile input

  [[noreturn]] void fail(const std::string& what) const {
    size_t line = 1, col = 1;
    for (size_t k = 0; k < i_ && k < s_.size(); ++k) {
      if (s_[k] == '\n') ++line, col = 1;
      else ++col;
    }
    throw Error("line " + std::to_string(line) + " column " + std::to_string(col) + ": " + what);
  }

  void space() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }

  bool eat(char c) {
    space();
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }

  void expect(char c) {
    if (!eat(c)) fail(std::string("expected '") + c + "'");
  }

  bool word(const char* w) {
    size_t n = 0;
    while (w[n]) ++n;
    if (s_.compare(i_, n, w) != 0) return false;
    i_ += n;
    return true;
  }

  Value value(int depth) {
    if (depth > kMaxDepth) fail("nested too deeply");
    space();
    if (i_ >= s_.size()) fail("unexpected end of text");
    Value v;
    const char c = s_[i_];
    if (c == '{') {
      ++i_;
      v.kind_ = Value::Kind::Object;
      if (eat('}')) return v;
      do {
        space();
        if (i_ >= s_.size() || s_[i_] != '"') fail("expected a string key");
        std::string key = string();
        expect(':');
        v.object_.emplace_back(std::move(key), value(depth + 1));
      } while (eat(','));
      expect('}');
    } else if (c == '[') {
      ++i_;
      v.kind_ = Value::Kind::Array;
      if (eat(']')) return v;
      do v.array_.push_back(value(depth + 1));
      while (eat(','));
      expect(']');
    } else if (c == '"') {
      v.kind_ = Value::Kind::String;
      v.string_ = string();
    } else if (word("true") || word("false")) {
      v.kind_ = Value::Kind::Bool;
      v.bool_ = c == 't';
    } else if (word("null")) {
      v.kind_ = Value::Kind::Null;
    } else if (c == '-' || (c >= '0' && c <= '9') || word("NaN") || word("Infinity")) {
      v.kind_ = Value::Kind::Number;
      v.number_ = number(c);
    } else {
      fail(std::string("unexpected character '") + c + "'");
    }
    return v;
  }

  // Python's json writes NaN/Infinity/-Infinity for such floats (e.g. an empty benchmark); accept them.
  double number(char first) {
    if (first == 'N') return NAN;
    if (first == 'I') return INFINITY;
    const size_t start = i_;
    if (s_[i_] == '-') {
      ++i_;
      if (word("Infinity")) return -INFINITY;
    }
    auto digits = [&] {
      const size_t from = i_;
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
      if (i_ == from) fail("malformed number");
    };
    digits();
    if (i_ < s_.size() && s_[i_] == '.') ++i_, digits();
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      ++i_;
      if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
      digits();
    }
    // strtod follows the C locale here: no program of ours calls setlocale.
    return std::strtod(s_.substr(start, i_ - start).c_str(), nullptr);
  }

  unsigned hex4() {
    if (i_ + 4 > s_.size()) fail("truncated \\u escape");
    unsigned u = 0;
    for (int k = 0; k < 4; ++k) {
      const char h = s_[i_++];
      u <<= 4;
      if (h >= '0' && h <= '9') u |= h - '0';
      else if (h >= 'a' && h <= 'f') u |= h - 'a' + 10;
      else if (h >= 'A' && h <= 'F') u |= h - 'A' + 10;
      else fail("bad hex digit in \\u escape");
    }
    return u;
  }

  static void utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  std::string string() {
    ++i_;  // opening quote
    std::string out;
    for (;;) {
      if (i_ >= s_.size()) fail("unterminated string");
      const char c = s_[i_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in a string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ >= s_.size()) fail("unterminated string");
      switch (s_[i_++]) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00) {  // a UTF-16 surrogate pair
            if (!word("\\u")) fail("lone high surrogate");
            const unsigned lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail("bad low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            fail("lone low surrogate");
          }
          utf8(out, cp);
          break;
        }
        default: fail("bad escape in a string");
      }
    }
  }

  const std::string& s_;
  size_t i_ = 0;
};

Value Value::parse(const std::string& text) { return Parser(text).document(); }

Value parse_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open");
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) throw Error(path + ": read error");
  try {
    return Value::parse(ss.str());
  } catch (const Error& e) {
    throw Error(path + ": not valid JSON: " + e.what());
  }
}

}  // namespace json
}  // namespace edgesdk
