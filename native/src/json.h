// Reading the JSON files edgesdk writes itself (manifest.json, artifact.json) with nlohmann/json,
// behind a small view that names where a value sits when it has the wrong kind. Internal to the
// native library.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace edgesdk {
namespace json {

// Malformed text, or a value of the wrong kind where the reader asked for one. what() names the
// place: a line/column for syntax, a key path ("inputs[0].shape") for kinds.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A value inside a parsed document (objects keep their key order). Copies are cheap: every view
// shares the document.
class Value {
 public:
  enum class Kind : uint8_t { Null, Bool, Number, String, Array, Object };

  Value();
  Kind kind() const;
  bool is_null() const { return kind() == Kind::Null; }
  const char* kind_name() const;

  // Typed access; throws Error naming `path` (where this value sits, for the message) on a wrong kind.
  bool as_bool(const std::string& path) const;
  double as_number(const std::string& path) const;
  int64_t as_int(const std::string& path) const;  // a number with no fraction
  const std::string& as_string(const std::string& path) const;
  std::vector<Value> as_array(const std::string& path) const;
  std::vector<std::pair<std::string, Value>> as_object(const std::string& path) const;

  // Object member, or nothing (also when this is not an object).
  std::optional<Value> find(const std::string& key) const;

  static Value parse(const std::string& text);  // throws Error with line:column

 private:
  using Node = nlohmann::ordered_json;
  Value(std::shared_ptr<const Node> doc, const Node* node) : doc_(std::move(doc)), node_(node) {}
  std::shared_ptr<const Node> doc_;
  const Node* node_;
};

// Reads a whole file; throws Error naming the file for I/O failures and syntax errors.
Value parse_file(const std::string& path);

}  // namespace json
}  // namespace edgesdk
