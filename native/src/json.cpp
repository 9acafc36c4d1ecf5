// json.h over nlohmann/json: strict RFC 8259 (no NaN/Infinity literals: bundle.py writes none),
// nesting bounded for hostile input, errors that say where.
#include "json.h"

#include <cmath>
#include <fstream>
#include <sstream>

namespace edgesdk {
namespace json {

namespace {
constexpr int kMaxDepth = 256;

const nlohmann::ordered_json& null_node() {
  static const nlohmann::ordered_json n;
  return n;
}
}  // namespace

Value::Value() : node_(&null_node()) {}

Value::Kind Value::kind() const {
  switch (node_->type()) {
    case Node::value_t::boolean: return Kind::Bool;
    case Node::value_t::number_integer:
    case Node::value_t::number_unsigned:
    case Node::value_t::number_float: return Kind::Number;
    case Node::value_t::string: return Kind::String;
    case Node::value_t::array: return Kind::Array;
    case Node::value_t::object: return Kind::Object;
    default: return Kind::Null;
  }
}

const char* Value::kind_name() const {
  switch (kind()) {
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
  if (kind() != Kind::Bool) wrong(*this, path, "a boolean");
  return node_->get<bool>();
}

double Value::as_number(const std::string& path) const {
  if (kind() != Kind::Number) wrong(*this, path, "a number");
  return node_->get<double>();
}

int64_t Value::as_int(const std::string& path) const {
  if (node_->is_number_integer() && !(node_->is_number_unsigned() && node_->get<uint64_t>() > 9000000000000000ull))
    return node_->get<int64_t>();
  const double d = as_number(path);
  if (d != std::floor(d) || std::fabs(d) > 9.0e15) throw Error(path + ": expected an integer, got " + std::to_string(d));
  return static_cast<int64_t>(d);
}

const std::string& Value::as_string(const std::string& path) const {
  if (kind() != Kind::String) wrong(*this, path, "a string");
  return node_->get_ref<const std::string&>();
}

std::vector<Value> Value::as_array(const std::string& path) const {
  if (kind() != Kind::Array) wrong(*this, path, "an array");
  std::vector<Value> out;
  out.reserve(node_->size());
  for (const auto& item : *node_) out.push_back(Value(doc_, &item));
  return out;
}

std::vector<std::pair<std::string, Value>> Value::as_object(const std::string& path) const {
  if (kind() != Kind::Object) wrong(*this, path, "an object");
  std::vector<std::pair<std::string, Value>> out;
  out.reserve(node_->size());
  for (const auto& kv : node_->items()) out.emplace_back(kv.key(), Value(doc_, &kv.value()));
  return out;
}

std::optional<Value> Value::find(const std::string& key) const {
  if (!node_->is_object()) return std::nullopt;
  const auto it = node_->find(key);
  if (it == node_->end()) return std::nullopt;
  return Value(doc_, &*it);
}

Value Value::parse(const std::string& text) {
  // The callback sees every value's depth before the parser descends further: a deeply nested
  // document is refused instead of exhausting the stack where it is destroyed.
  const auto bounded = [](int depth, nlohmann::ordered_json::parse_event_t, nlohmann::ordered_json&) {
    if (depth > kMaxDepth) throw Error("nested too deeply (more than " + std::to_string(kMaxDepth) + " levels)");
    return true;
  };
  try {
    auto doc = std::make_shared<const Node>(Node::parse(text, bounded));
    const Node* root = doc.get();
    return Value(std::move(doc), root);
  } catch (const nlohmann::ordered_json::parse_error& e) {
    // e.byte is 1-based and points past the offending character; turn it into line and column.
    size_t line = 1, col = 1;
    for (size_t k = 0; k + 1 < e.byte && k < text.size(); ++k) {
      if (text[k] == '\n') ++line, col = 1;
      else ++col;
    }
    std::string what = e.what();  // "[json.exception.parse_error.101] parse error at line L, column C: ..."
    const size_t colon = what.find(": ", what.find("parse error"));
    throw Error("line " + std::to_string(line) + " column " + std::to_string(col) + ": " +
                (colon == std::string::npos ? what : what.substr(colon + 2)));
  }
}

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
