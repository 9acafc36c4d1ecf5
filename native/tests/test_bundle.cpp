// C++ tests of the bundle reader (bundle.h, the JSON reader under it): ctest, natively or under qemu
// for cross builds. The pytest tests/test_cross.py runs edgesdk-run on a real packaged bundle.
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "../src/json.h"
#include "edgesdk/bundle.h"

using namespace edgesdk;

#include "check.h"

// The exception's message when `fn` throws E, else "" (and a failure when it does not throw).
template <class E, class F>
static std::string thrown(F fn, int line) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  }
  std::fprintf(stderr, "%s:%d: expected an exception\n", __FILE__, line);
  ++failures;
  return "";
}
#define THROWS(E, expr) thrown<E>([&] { expr; }, __LINE__)

static bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

static void write(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f << bytes;
}

static void test_json() {
  using json::Value;
  const Value v = Value::parse(
      "{\"a\": [1, -2.5e3, true, null, \"x\\n\\u00e9\\ud83d\\ude00\"], \"b\": {\"c\": 1e308}, \"a2\": 0}");
  const auto& a = v.find("a")->as_array("a");
  CHECK(a.size() == 5);
  CHECK(a[0].as_int("a[0]") == 1);
  CHECK(a[1].as_number("a[1]") == -2500.0);
  CHECK(a[2].as_bool("a[2]"));
  CHECK(a[3].is_null());
  CHECK(a[4].as_string("a[4]") == "x\n\xc3\xa9\xf0\x9f\x98\x80");  // é and U+1F600 from a surrogate pair
  CHECK(v.find("b")->find("c")->as_number("c") == 1e308);
  CHECK(v.as_object("")[2].first == "a2");  // key order kept
  CHECK(!v.find("zz"));
  CHECK(!a[0].find("zz"));  // not an object
  CHECK(contains(THROWS(json::Error, Value::parse("0.5").as_int("k")), "k: expected an integer"));
  CHECK(contains(THROWS(json::Error, a[0].as_string("inputs[0].name")), "inputs[0].name: expected a string, got a number"));
  CHECK(contains(THROWS(json::Error, Value::parse("{\n  \"a\": [1,\n  2,, 3]}")), "line 3 column 5"));
  CHECK(contains(THROWS(json::Error, Value::parse("[1] x")), "expected end of input"));
  CHECK(contains(THROWS(json::Error, Value::parse("\"abc")), "missing closing quote"));
  CHECK(contains(THROWS(json::Error, Value::parse("\"\\ud800\"")), "surrogate"));
  CHECK(contains(THROWS(json::Error, Value::parse(std::string(1000, '['))), "nested too deeply"));
  CHECK(contains(THROWS(json::Error, Value::parse("")), "unexpected end of input"));
  // RFC 8259 has no NaN/Infinity; bundle.py writes none, so one in a manifest is an error, not a number.
  CHECK(contains(THROWS(json::Error, Value::parse("{\"c\": NaN}")), "line 1 column"));
}

static void test_sha256() {
  // FIPS 180-4 examples, and a length that pads into a second block.
  CHECK(sha256_hex("", 0) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_hex("abc", 3) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const char* two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  CHECK(sha256_hex(two, std::strlen(two)) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const std::string million(1000000, 'a');
  CHECK(sha256_hex(million.data(), million.size()) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static std::string npy(const char* descr, const char* shape, const std::string& data) {
  std::string header = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  while ((10 + header.size() + 1) % 64) header += ' ';
  header += '\n';
  std::string out = "\x93NUMPY\x01";
  out += '\0';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  return out + header + data;
}

static void test_npy(const std::string& dir) {
  const float vals[6] = {1.5f, -2.0f, 0.25f, 3.0f, 1e-3f, -7.0f};
  write(dir + "/f.npy", npy("<f4", "(2, 3)", std::string(reinterpret_cast<const char*>(vals), sizeof vals)));
  Tensor t = read_npy(dir + "/f.npy");
  CHECK(t.type == ElementType::F32);
  CHECK(t.shape == (std::vector<int64_t>{2, 3}));
  CHECK(t.strides == (std::vector<int64_t>{12, 4}));
  CHECK(std::memcmp(t.data, vals, sizeof vals) == 0);
  write(dir + "/u.npy", npy("|u1", "(2, 2, 3)", std::string(12, '\x07')));
  Tensor u = read_npy(dir + "/u.npy");
  CHECK(u.type == ElementType::U8 && u.count() == 12 && static_cast<uint8_t*>(u.data)[11] == 7);
  write(dir + "/short.npy", npy("<f4", "(2, 3)", std::string(8, '\0')));
  CHECK(contains(THROWS(BundleError, read_npy(dir + "/short.npy")), "shorter than its shape"));
  write(dir + "/c.npy", npy("<c8", "(1,)", std::string(8, '\0')));
  CHECK(contains(THROWS(BundleError, read_npy(dir + "/c.npy")), "'<c8' is not supported"));
  write(dir + "/x.npy", "PK\x03\x04 not numpy");
  CHECK(contains(THROWS(BundleError, read_npy(dir + "/x.npy")), "not a .npy file"));
}

static std::string manifest(const std::string& files, const std::string& extra = "") {
  return "{\"schema\": 1, \"target\": {\"name\": \"t\", \"arch\": \"aarch64\"}, \"backend\": \"onnxruntime\", "
         "\"precision\": \"fp32\", \"threads\": 2, "
         "\"inputs\": [{\"name\": \"x\", \"shape\": [\"batch\", 3, 8, 8], \"dtype\": \"float32\"}], "
         "\"outputs\": [{\"name\": \"y\", \"shape\": [1, 10], \"dtype\": \"float32\"}], "
         "\"preprocess\": {\"size\": [8, 6], \"resize\": \"letterbox\", \"pad\": 0, \"color\": \"bgr\", "
         "\"mean\": [1, 2, 3], \"std\": 2.0, \"layout\": \"nhwc\", \"dtype\": \"float32\", \"interp\": \"nearest\"}, "
         "\"postprocess\": {\"kind\": \"topk\", \"k\": 3}, \"labels\": \"labels.txt\", \"versions\": {\"edgesdk\": \"0.1.0\"}, "
         "\"validation\": {\"tolerance\": {\"min_cosine\": 0.995}}, \"benchmark\": null, "
         "\"golden\": [{\"inputs\": {\"x\": \"golden/in.npy\"}, \"outputs\": {\"y\": \"golden/out.npy\"}}], "
         "\"files\": " + files + extra + "}";
}

static void test_bundle(const std::string& dir) {
  const std::string b = dir + "/bundle";
  mkdir(b.c_str(), 0755);
  mkdir((b + "/golden").c_str(), 0755);
  write(b + "/labels.txt", "cat\r\ndog\n");
  write(b + "/golden/in.npy", "in");
  write(b + "/golden/out.npy", "out");
  const std::string files = "{\"labels.txt\": \"" + sha256_file(b + "/labels.txt") + "\", \"golden/in.npy\": \"" +
                            sha256_hex("in", 2) + "\", \"golden/out.npy\": \"" + sha256_hex("out", 3) + "\"}";
  write(b + "/manifest.json", manifest(files));
  const Bundle got = read_bundle(b + "/");
  CHECK(got.root == b);
  CHECK(got.target == "t" && got.arch == "aarch64" && got.backend == "onnxruntime" && got.threads == 2);
  CHECK(got.inputs.size() == 1 && got.inputs[0].shape == (std::vector<int64_t>{-1, 3, 8, 8}));
  CHECK(got.outputs[0].name == "y" && got.outputs[0].type == ElementType::F32);
  CHECK(got.has_preprocess && got.preprocess.width == 8 && got.preprocess.height == 6);
  CHECK(got.preprocess.resize == ResizeMode::Letterbox && got.preprocess.color == ColorOrder::BGR);
  CHECK(got.preprocess.layout == Layout::NHWC && got.preprocess.interp == Interp::Nearest && got.preprocess.pad == 0);
  CHECK(got.preprocess.mean[2] == 3.0 && got.preprocess.std[0] == 2.0 && got.preprocess.std[2] == 2.0);
  CHECK(got.postprocess == "topk" && got.topk == 3);
  CHECK(got.labels == (std::vector<std::string>{"cat", "dog"}));
  CHECK(got.golden.size() == 1 && got.golden[0].outputs[0].second == "golden/out.npy");
  CHECK(got.min_cosine == 0.995);
  CHECK(read_bundle(b + "/manifest.json").files.size() == 3);

  // A modified file is refused by name; without verification it loads.
  write(b + "/golden/out.npy", "0ut");
  CHECK(contains(THROWS(BundleError, read_bundle(b)), "file golden/out.npy does not match its sha256"));
  CHECK(read_bundle(b, false).files.size() == 3);
  std::remove((b + "/golden/out.npy").c_str());
  CHECK(contains(THROWS(BundleError, read_bundle(b)), "file golden/out.npy is missing"));

  write(b + "/manifest.json", manifest("{\"../etc/passwd\": \"" + std::string(64, 'a') + "\"}"));
  CHECK(contains(THROWS(BundleError, read_bundle(b, false)), "unsafe file path '../etc/passwd'"));
  write(b + "/manifest.json", manifest("{\"labels.txt\": \"ABC\"}"));
  CHECK(contains(THROWS(BundleError, read_bundle(b, false)), "bad sha256 for 'labels.txt'"));
  write(b + "/manifest.json", "{\"schema\": 2}");
  CHECK(contains(THROWS(BundleError, read_bundle(b)), "schema 2; this edgesdk reads schema 1 - upgrade edgesdk"));
  write(b + "/manifest.json", "{\"schema\": 1, \"backend\": \"ncnn\"}");
  CHECK(contains(THROWS(BundleError, read_bundle(b)), "manifest lacks keys target, precision"));
  write(b + "/manifest.json", "{\"schema\": 1,");
  CHECK(contains(THROWS(BundleError, read_bundle(b)), "manifest.json: not valid JSON: line 1"));
  CHECK(contains(THROWS(BundleError, read_bundle(dir + "/nowhere")), "no such bundle directory"));
  CHECK(contains(THROWS(BundleError, read_bundle(dir)), "not a bundle (no manifest.json)"));
}

int main() {
  char tmpl[] = "/tmp/edgesdk-bundle-test.XXXXXX";
  const char* dir = mkdtemp(tmpl);
  if (!dir) {
    std::perror("mkdtemp");
    return 1;
  }
  test_json();
  test_sha256();
  test_npy(dir);
  test_bundle(dir);
  const std::string cleanup[] = {"/bundle/labels.txt", "/bundle/golden/in.npy", "/bundle/manifest.json", "/f.npy",
                                 "/u.npy", "/short.npy", "/c.npy", "/x.npy"};
  for (const std::string& f : cleanup) std::remove((dir + f).c_str());
  rmdir((std::string(dir) + "/bundle/golden").c_str());
  rmdir((std::string(dir) + "/bundle").c_str());
  rmdir(dir);
  std::printf("%d failed\n", failures);
  return failures ? 1 : 0;
}
