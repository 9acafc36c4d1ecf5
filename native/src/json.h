// A small JSON reader for the files edgesdk writes itself (manifest.json, artifact.json): RFC 8259
// values into a tree, objects keeping their key order. Internal to the native library.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace edgesdk {
namespace json {

// Malformed text, or a value of the wrong kind where the reader asked for one. what() names the
// place: a line/column for syntax, a key path ("inputs[0].shape") for kinds.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Value {
 public:
  enum class Kind : uint8_t { Null, Bool, Number, String, Array, Object };

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::Null; }
  const char* kind_name() const;

  // Typed access; throws Error naming `path` (where this value sits, for the message) on a wrong kind.
  bool as_bool(const std::string& path) const;
  double as_number(const std::string& path) const;
  int64_t as_int(const std::string& path) const;  // a number with no fraction
  const std::string& as_string(const std::string& path) const;
  const std::vector<Value>& as_array(const std::string& path) const;
  const std::vector<std::pair<std::string, Value>>& as_object(const std::string& path) const;

  // Object member or nullptr (also when this is not an object).
  const Value* find(const std::string& key) const;

  static Value parse(const std::string& text);  // throws Error with line:column

 private:
  friend class Parser;
  Kind kind_ = Kind::Null;
  bool bool_ = false;
  double number_ = 0.0;
  std::string string_;
  std::vector<Value> array_;
  std::vector<std::pair<std::string, Value>> object_;
};

// Reads a whole file; throws Error naming the file for I/O failures and syntax errors.
Value parse_file(const std::string& path);

}  // namespace json
}  // namespace edgesdk
