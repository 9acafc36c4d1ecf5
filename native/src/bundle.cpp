// Bundle reading (bundle.h): manifest.json + model/artifact.json into a Bundle, SHA-256 of the files
// the manifest lists, and .npy golden samples. Mirrors edgesdk/bundle.py and edgesdk/runtime.py.
#include "edgesdk/bundle.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <fstream>

#include "json.h"

namespace edgesdk {
namespace {

constexpr int kSchema = 1;  // edgesdk/bundle.py SCHEMA
const char* const kRequired[] = {"schema", "target", "backend", "precision", "inputs", "outputs", "preprocess",
                                 "postprocess", "files", "versions", "validation", "benchmark", "golden"};

// ---- SHA-256 (FIPS 180-4)

class Sha256 {
 public:
  void update(const uint8_t* p, size_t n) {
    total_ += n;
    while (n > 0) {
      const size_t take = std::min(n, sizeof(buf_) - used_);
      std::memcpy(buf_ + used_, p, take);
      used_ += take, p += take, n -= take;
      if (used_ == sizeof(buf_)) block(buf_), used_ = 0;
    }
  }

  std::string hex() {
    const uint64_t bits = total_ * 8;
    const uint8_t one = 0x80, zero = 0;
    update(&one, 1);
    while (used_ != 56) update(&zero, 1);
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
    update(len, 8);
    static const char digits[] = "0123456789abcdef";
    std::string out;
    for (uint32_t v : h_)
      for (int s = 28; s >= 0; s -= 4) out += digits[(v >> s) & 0xF];
    return out;
  }

 private:
  static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

  void block(const uint8_t* p) {
    static const uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = uint32_t(p[4 * i]) << 24 | uint32_t(p[4 * i + 1]) << 16 | uint32_t(p[4 * i + 2]) << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 64; ++i) {
      const uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h_[0] += a, h_[1] += b, h_[2] += c, h_[3] += d, h_[4] += e, h_[5] += f, h_[6] += g, h_[7] += h;
  }

  uint32_t h_[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  uint8_t buf_[64];
  size_t used_ = 0;
  uint64_t total_ = 0;
};

// ---- manifest helpers

// Files the manifest lists must be regular files, not symlinks (as bundle.py checks).
bool is_file(const std::string& p, bool follow_links = false) {
  struct stat st {};
  return (follow_links ? stat(p.c_str(), &st) : lstat(p.c_str(), &st)) == 0 && S_ISREG(st.st_mode);
}

bool is_dir(const std::string& p) {
  struct stat st {};
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// Manifest paths stay inside the bundle: relative, no "..", no backslashes (bundle.py _safe_relpath).
void check_relpath(const std::string& rel, const std::string& where) {
  bool bad = rel.empty() || rel[0] == '/' || rel.find('\\') != std::string::npos;
  size_t start = 0;
  while (!bad && start <= rel.size()) {
    const size_t end = std::min(rel.find('/', start), rel.size());
    if (rel.compare(start, end - start, "..") == 0 && end - start == 2) bad = true;
    start = end + 1;
  }
  if (bad) throw BundleError(where + ": unsafe file path '" + rel + "' in manifest");
}

ElementType element_type(const std::string& name, const std::string& where) {
  static const std::pair<const char*, ElementType> names[] = {
      {"float32", ElementType::F32}, {"float16", ElementType::F16}, {"uint8", ElementType::U8},
      {"int8", ElementType::I8},     {"int32", ElementType::I32},   {"int64", ElementType::I64}};
  for (const auto& n : names)
    if (name == n.first) return n.second;
  throw BundleError(where + ": dtype '" + name + "' is not one the native runtime handles");
}

// TensorInfo.to_dict: {"name", "shape": [int or string for a dynamic dim], "dtype"}.
std::vector<TensorSpec> tensors(const json::Value& list, const std::string& where) {
  std::vector<TensorSpec> out;
  const auto& items = list.as_array(where);
  for (size_t i = 0; i < items.size(); ++i) {
    const std::string at = where + "[" + std::to_string(i) + "]";
    const auto name = items[i].find("name");
    const auto shape = items[i].find("shape");
    const auto dtype = items[i].find("dtype");
    if (!name || !shape || !dtype) throw BundleError(at + ": expected name, shape and dtype");
    TensorSpec t;
    t.name = name->as_string(at + ".name");
    for (const json::Value& d : shape->as_array(at + ".shape"))
      t.shape.push_back(d.kind() == json::Value::Kind::String ? -1 : d.as_int(at + ".shape"));
    t.type = element_type(dtype->as_string(at + ".dtype"), at + ".dtype");
    out.push_back(std::move(t));
  }
  return out;
}

json::Value member(const json::Value& obj, const std::string& key, const std::string& where) {
  obj.as_object(where);
  const auto v = obj.find(key);
  if (!v) throw BundleError(where + ": missing key '" + key + "'");
  return *v;
}

void read_triple(const json::Value& v, double out[3], const std::string& where) {
  if (v.kind() == json::Value::Kind::Number) {
    out[0] = out[1] = out[2] = v.as_number(where);
    return;
  }
  const auto& a = v.as_array(where);
  if (a.size() != 3) throw BundleError(where + ": expected 3 numbers, got " + std::to_string(a.size()));
  for (int i = 0; i < 3; ++i) out[i] = a[i].as_number(where);
}

// The manifest's preprocess table (PreprocessSpec.to_dict) -> the native spec.
PreprocessSpec preprocess_spec(const json::Value& d, const std::string& where) {
  PreprocessSpec s;
  auto str = [&](const char* key, const char* fallback) {
    const auto v = d.find(key);
    return v ? v->as_string(where + "." + key) : std::string(fallback);
  };
  auto choose = [&](const char* key, const std::string& got, std::initializer_list<const char*> allowed) {
    for (const char* a : allowed)
      if (got == a) return;
    throw BundleError(where + "." + key + ": unknown value '" + got + "'");
  };
  const auto& size = member(d, "size", where).as_array(where + ".size");
  if (size.size() != 2) throw BundleError(where + ".size: expected [width, height]");
  s.width = static_cast<int>(size[0].as_int(where + ".size"));
  s.height = static_cast<int>(size[1].as_int(where + ".size"));
  const std::string resize = str("resize", "letterbox"), color = str("color", "rgb"), layout = str("layout", "nchw"),
                    dtype = str("dtype", "float32"), interp = str("interp", "bilinear");
  choose("resize", resize, {"letterbox", "stretch"});
  choose("color", color, {"rgb", "bgr"});
  choose("layout", layout, {"nchw", "nhwc"});
  choose("dtype", dtype, {"float32", "float16", "uint8"});
  choose("interp", interp, {"bilinear", "nearest"});
  s.resize = resize == "stretch" ? ResizeMode::Stretch : ResizeMode::Letterbox;
  s.color = color == "bgr" ? ColorOrder::BGR : ColorOrder::RGB;
  s.layout = layout == "nhwc" ? Layout::NHWC : Layout::NCHW;
  s.dtype = dtype == "float16" ? DType::Float16 : dtype == "uint8" ? DType::UInt8 : DType::Float32;
  s.interp = interp == "nearest" ? Interp::Nearest : Interp::Bilinear;
  if (const auto pad = d.find("pad")) {
    const int64_t p = pad->as_int(where + ".pad");
    if (p < 0 || p > 255) throw BundleError(where + ".pad: expected 0..255, got " + std::to_string(p));
    s.pad = static_cast<uint8_t>(p);
  }
  if (const auto mean = d.find("mean")) read_triple(*mean, s.mean, where + ".mean");
  if (const auto std_ = d.find("std")) read_triple(*std_, s.std, where + ".std");
  return s;
}

// model/artifact.json of an ncnn artifact (edgesdk/backends/ncnn/convert.py): files and blob mapping.
NcnnConfig ncnn_config(const Bundle& b, const std::string& model_dir) {
  const std::string apath = model_dir + "/artifact.json";
  json::Value a;
  try {
    a = json::parse_file(apath);
  } catch (const json::Error& e) {
    throw BundleError(b.root + ": " + e.what());
  }
  NcnnConfig c;
  const json::Value meta = member(a, "meta", apath);
  const std::string param = member(meta, "param", apath + ": meta").as_string(apath + ": meta.param");
  const std::string bin = member(meta, "bin", apath + ": meta").as_string(apath + ": meta.bin");
  check_relpath(param, apath);
  check_relpath(bin, apath);
  c.param = model_dir + "/" + param;
  c.bin = model_dir + "/" + bin;
  for (const std::string& f : {c.param, c.bin})
    if (!is_file(f)) throw BundleError(b.root + ": ncnn model file " + f + " is missing");
  const std::string precision = member(a, "precision", apath).as_string(apath + ": precision");
  c.fp16 = precision == "fp16";
  if (const auto v = meta.find("fp16_arithmetic")) c.fp16_arithmetic = c.fp16 && v->as_bool(apath + ": meta.fp16_arithmetic");
  if (const auto v = meta.find("cpu_powersave")) c.cpu_powersave = static_cast<int>(v->as_int(apath + ": meta.cpu_powersave"));
  c.threads = b.threads;
  // ncnn reads weights without checking their length: an int8 param beside another build's bin
  // would load and compute garbage, so the writer recorded the size (as the Python session checks).
  if (const auto q = meta.find("int8")) {
    if (const auto size = q->find("bin_size")) {
      struct stat st {};
      stat(c.bin.c_str(), &st);
      if (static_cast<int64_t>(st.st_size) != size->as_int(apath + ": meta.int8.bin_size"))
        throw BundleError(c.bin + ": " + std::to_string(st.st_size) + " bytes where the int8 build wrote " +
                          std::to_string(size->as_int("")) + "; this weight file does not belong to " + param);
    }
  }
  auto blobs = [&](const char* side, std::vector<NcnnBlob>& out) {
    const std::string where = apath + ": " + side;
    const std::vector<TensorSpec> specs = tensors(member(a, side, apath), where);
    const json::Value map = member(meta, side, apath + ": meta");
    for (const TensorSpec& t : specs) {
      const std::string at = apath + ": meta." + side + "." + t.name;
      const json::Value m = member(map, t.name, apath + ": meta." + side);
      NcnnBlob nb;
      nb.name = t.name;
      nb.blob = member(m, "blob", at).as_string(at + ".blob");
      const json::Value axis = member(m, "batch_axis", at);
      nb.batch_axis = axis.is_null() ? -1 : static_cast<int>(axis.as_int(at + ".batch_axis"));
      nb.shape = t.shape;
      nb.type = t.type;
      out.push_back(std::move(nb));
    }
  };
  blobs("inputs", c.inputs);
  blobs("outputs", c.outputs);
  return c;
}

Bundle parse(const std::string& root, const json::Value& m, bool verify) {
  const std::string mpath = root + "/manifest.json";
  m.as_object(mpath);
  const auto schema = m.find("schema");
  if (!schema || schema->kind() != json::Value::Kind::Number || schema->as_number("") != kSchema) {
    std::string got = !schema ? "none" : schema->kind() == json::Value::Kind::Number
                                             ? std::to_string(schema->as_int(mpath + ": schema"))
                                             : schema->kind_name();
    const bool newer = schema && schema->kind() == json::Value::Kind::Number && schema->as_number("") > kSchema;
    throw BundleError(mpath + ": manifest schema " + got + "; this edgesdk reads schema " + std::to_string(kSchema) +
                      (newer ? " - upgrade edgesdk" : ""));
  }
  std::string missing;
  for (const char* k : kRequired)
    if (!m.find(k)) missing += std::string(missing.empty() ? "" : ", ") + k;
  if (!missing.empty()) throw BundleError(mpath + ": manifest lacks keys " + missing);

  Bundle b;
  b.root = root;
  b.schema = kSchema;
  b.backend = m.find("backend")->as_string(mpath + ": backend");
  b.precision = m.find("precision")->as_string(mpath + ": precision");
  const json::Value target = *m.find("target");
  if (target.kind() == json::Value::Kind::Object) {
    if (const auto v = target.find("name")) b.target = v->as_string(mpath + ": target.name");
    if (const auto v = target.find("arch")) b.arch = v->as_string(mpath + ": target.arch");
  }
  if (const auto t = m.find("threads"); t && !t->is_null()) b.threads = static_cast<int>(t->as_int(mpath + ": threads"));
  b.inputs = tensors(*m.find("inputs"), mpath + ": inputs");
  b.outputs = tensors(*m.find("outputs"), mpath + ": outputs");

  const json::Value pre = *m.find("preprocess");
  if (!pre.is_null()) {
    b.preprocess = preprocess_spec(pre, mpath + ": preprocess");
    b.has_preprocess = true;
  }
  const json::Value post = *m.find("postprocess");
  if (!post.is_null()) {
    if (const auto kind = post.find("kind")) b.postprocess = kind->as_string(mpath + ": postprocess.kind");
    if (const auto k = post.find("k")) b.topk = static_cast<int>(k->as_int(mpath + ": postprocess.k"));
  }

  for (const auto& kv : m.find("files")->as_object(mpath + ": files")) {
    check_relpath(kv.first, mpath);
    const std::string& digest = kv.second.as_string(mpath + ": files." + kv.first);
    if (digest.size() != 64 || digest.find_first_not_of("0123456789abcdef") != std::string::npos)
      throw BundleError(mpath + ": bad sha256 for '" + kv.first + "'");
    b.files.emplace_back(kv.first, digest);
  }
  if (b.files.empty()) throw BundleError(mpath + ": 'files' must map relative paths to sha256 digests");
  if (verify) {
    for (const auto& f : b.files) {
      const std::string p = b.path(f.first);
      if (!is_file(p)) throw BundleError(root + ": file " + f.first + " is missing");
      if (sha256_file(p) != f.second)
        throw BundleError(root + ": file " + f.first + " does not match its sha256 in the manifest (modified or corrupt)");
    }
  }
  auto listed = [&](const std::string& rel) {
    return std::any_of(b.files.begin(), b.files.end(), [&](const auto& f) { return f.first == rel; });
  };

  const json::Value versions = *m.find("versions");
  if (versions.kind() == json::Value::Kind::Object)
    for (const auto& kv : versions.as_object(""))
      if (kv.second.kind() == json::Value::Kind::String) b.versions.emplace_back(kv.first, kv.second.as_string(""));

  const json::Value validation = *m.find("validation");
  if (const auto tol = validation.find("tolerance"))
    if (const auto c = tol->find("min_cosine"); c && !c->is_null()) b.min_cosine = c->as_number(mpath + ": validation.tolerance.min_cosine");

  const auto& golden = m.find("golden")->as_array(mpath + ": golden");
  for (size_t i = 0; i < golden.size(); ++i) {
    GoldenSample s;
    for (const char* side : {"inputs", "outputs"}) {
      const std::string at = mpath + ": golden[" + std::to_string(i) + "]." + side;
      for (const auto& kv : member(golden[i], side, at).as_object(at)) {
        const std::string& rel = kv.second.as_string(at + "." + kv.first);
        check_relpath(rel, mpath);
        if (!listed(rel)) throw BundleError(mpath + ": golden file '" + rel + "' is not covered by 'files'");
        (side[0] == 'i' ? s.inputs : s.outputs).emplace_back(kv.first, rel);
      }
    }
    b.golden.push_back(std::move(s));
  }

  if (const auto labels = m.find("labels"); labels && !labels->is_null()) {
    const std::string rel = labels->as_string(mpath + ": labels");
    check_relpath(rel, mpath);
    std::ifstream f(b.path(rel));
    if (!f) throw BundleError(root + ": labels file " + rel + " is missing");
    for (std::string line; std::getline(f, line);) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      b.labels.push_back(line);
    }
  }

  if (b.backend == "ncnn") b.ncnn = ncnn_config(b, b.path("model"));
  return b;
}

}  // namespace

std::string Bundle::path(const std::string& relative) const { return root + "/" + relative; }

std::string sha256_hex(const void* data, size_t size) {
  Sha256 h;
  h.update(static_cast<const uint8_t*>(data), size);
  return h.hex();
}

std::string sha256_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw BundleError(path + ": cannot open");
  Sha256 h;
  std::vector<char> buf(1 << 20);
  while (f) {
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h.update(reinterpret_cast<const uint8_t*>(buf.data()), static_cast<size_t>(f.gcount()));
  }
  if (f.bad()) throw BundleError(path + ": read error");
  return h.hex();
}

Bundle read_bundle(const std::string& dir, bool verify) {
  std::string root = dir;
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  const std::string suffix = "/manifest.json";
  if (root == "manifest.json") root = ".";
  else if (root.size() > suffix.size() && root.compare(root.size() - suffix.size(), suffix.size(), suffix) == 0 && is_file(root, true))
    root.erase(root.size() - suffix.size());
  if (!is_dir(root)) throw BundleError(root + ": no such bundle directory");
  if (!is_file(root + suffix, true)) throw BundleError(root + ": not a bundle (no manifest.json)");
  try {
    return parse(root, json::parse_file(root + suffix), verify);
  } catch (const json::Error& e) {
    throw BundleError(e.what());
  }
}

// ---- .npy (numpy.lib.format): magic, version, header length, a Python dict literal, raw data.

Tensor read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw BundleError(path + ": cannot open");
  char magic[8];
  if (!f.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw BundleError(path + ": not a .npy file");
  const int major = static_cast<unsigned char>(magic[6]);
  uint32_t header_len = 0;
  unsigned char len[4] = {0, 0, 0, 0};
  if (major == 1) {
    f.read(reinterpret_cast<char*>(len), 2);
    header_len = len[0] | len[1] << 8;
  } else if (major == 2 || major == 3) {
    f.read(reinterpret_cast<char*>(len), 4);
    header_len = len[0] | len[1] << 8 | len[2] << 16 | static_cast<uint32_t>(len[3]) << 24;
  } else {
    throw BundleError(path + ": .npy format version " + std::to_string(major) + " is not supported");
  }
  if (!f || header_len > (1u << 20)) throw BundleError(path + ": truncated .npy header");
  std::string header(header_len, '\0');
  if (!f.read(&header[0], header_len)) throw BundleError(path + ": truncated .npy header");

  auto value_of = [&](const char* key) {
    const size_t k = header.find(std::string("'") + key + "'");
    if (k == std::string::npos) throw BundleError(path + ": .npy header lacks '" + key + "'");
    const size_t colon = header.find(':', k);
    return header.find_first_not_of(' ', colon + 1);
  };
  size_t at = value_of("descr");
  const size_t end = header.find('\'', at + 1);
  const std::string descr = header.substr(at + 1, end - at - 1);
  static const std::pair<const char*, ElementType> kinds[] = {
      {"<f4", ElementType::F32}, {"<f2", ElementType::F16}, {"|u1", ElementType::U8}, {"|i1", ElementType::I8},
      {"<i4", ElementType::I32}, {"<i8", ElementType::I64}, {"|b1", ElementType::U8}};
  Tensor t;
  bool known = false;
  for (const auto& k : kinds)
    if (descr == k.first) t.type = k.second, known = true;
  if (!known) throw BundleError(path + ": .npy dtype '" + descr + "' is not supported");
  if (header.compare(value_of("fortran_order"), 4, "True") == 0)
    throw BundleError(path + ": Fortran-ordered .npy files are not supported");
  at = value_of("shape");
  const size_t close = header.find(')', at);
  if (header[at] != '(' || close == std::string::npos) throw BundleError(path + ": malformed .npy shape");
  for (size_t p = at + 1; p < close;) {
    const size_t digit = header.find_first_of("0123456789", p);
    if (digit == std::string::npos || digit >= close) break;
    size_t used = 0;
    t.shape.push_back(std::stoll(header.substr(digit), &used));
    p = digit + used;
  }

  const size_t esize = element_size(t.type);
  t.strides.assign(t.shape.size(), 0);
  int64_t stride = static_cast<int64_t>(esize);
  for (size_t i = t.shape.size(); i-- > 0;) t.strides[i] = stride, stride *= t.shape[i];
  const size_t bytes = t.count() * esize;
  auto data = std::make_shared<std::vector<uint8_t>>(bytes);
  if (!f.read(reinterpret_cast<char*>(data->data()), static_cast<std::streamsize>(bytes)))
    throw BundleError(path + ": .npy data is shorter than its shape says");
  t.data = data->data();
  t.owner = data;
  return t;
}

}  // namespace edgesdk
