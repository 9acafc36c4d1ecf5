// edgesdk-run: run a bundle on an image from C++, on the board itself, without Python.
//
//   edgesdk-run BUNDLE IMAGE [--threads N] [--repeat N] [--top K] [--json] [--no-verify]
//   edgesdk-run BUNDLE --check [--threads N] [--no-verify]
//
// Loads the bundle (manifest checked, every sha256 verified unless --no-verify), preprocesses the
// image with the bundle's spec straight into the engine's input, runs, and prints every output, the
// top-K classes for a "topk" bundle, and the time of each step. --check replays the bundle's golden
// samples and compares with the reference outputs stored at build time (exit 1 when they differ).
//
// IMAGE: a binary PPM (P6, maxval 255), an HxWx3 uint8 .npy in BGR order (what cv2.imread gives),
// or - when built with Debian's libstb-dev - JPEG, PNG or BMP.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "edgesdk/bundle.h"
#include "edgesdk/core.h"
#include "edgesdk/engine.h"
#include "edgesdk/preprocess.h"

#if defined(EDGESDK_HAVE_STB)
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_NO_STDIO_TEXT
#include <stb_image.h>
#endif

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

// Bad input from the command line: one line on stderr, exit 2 (the CLI contract).
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Image {
  std::shared_ptr<uint8_t> pixels;
  edgesdk::ImageView view;
};

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::strlen(suffix);
  if (s.size() < n) return false;
  for (size_t i = 0; i < n; ++i)
    if (std::tolower(static_cast<unsigned char>(s[s.size() - n + i])) != suffix[i]) return false;
  return true;
}

// Binary PPM: "P6", width, height, maxval (255) separated by whitespace or # comments, one byte, RGB.
Image read_ppm(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw UsageError(path + ": cannot open");
  auto token = [&]() {
    std::string t;
    for (int c; (c = f.get()) != EOF;) {
      if (c == '#' && t.empty()) {
        while ((c = f.get()) != EOF && c != '\n') {
        }
      } else if (std::isspace(c)) {
        if (!t.empty()) return t;
      } else {
        t += static_cast<char>(c);
      }
    }
    return t;
  };
  if (token() != "P6") throw UsageError(path + ": not a binary PPM (P6) image");
  int w = 0, h = 0, maxval = 0;
  try {
    w = std::stoi(token()), h = std::stoi(token()), maxval = std::stoi(token());
  } catch (const std::exception&) {
    throw UsageError(path + ": malformed PPM header");
  }
  if (w <= 0 || h <= 0 || w > (1 << 16) || h > (1 << 16)) throw UsageError(path + ": PPM size " + std::to_string(w) + "x" + std::to_string(h) + " out of range");
  if (maxval != 255) throw UsageError(path + ": PPM maxval " + std::to_string(maxval) + "; only 8-bit (255) images are read");
  Image img;
  const size_t bytes = static_cast<size_t>(w) * h * 3;
  img.pixels.reset(new uint8_t[bytes], std::default_delete<uint8_t[]>());
  if (!f.read(reinterpret_cast<char*>(img.pixels.get()), static_cast<std::streamsize>(bytes)))
    throw UsageError(path + ": PPM pixel data is shorter than " + std::to_string(w) + "x" + std::to_string(h));
  img.view = {img.pixels.get(), w, h, static_cast<ptrdiff_t>(w) * 3, edgesdk::ColorOrder::RGB};
  return img;
}

Image read_npy_frame(const std::string& path) {
  edgesdk::Tensor t = edgesdk::read_npy(path);
  if (t.type != edgesdk::ElementType::U8 || t.shape.size() != 3 || t.shape[2] != 3)
    throw UsageError(path + ": expected an HxWx3 uint8 BGR frame, got " + edgesdk::element_name(t.type) + " with " +
                     std::to_string(t.shape.size()) + " dims");
  Image img;
  img.pixels = std::shared_ptr<uint8_t>(t.owner, static_cast<uint8_t*>(t.data));
  img.view = {img.pixels.get(), static_cast<int>(t.shape[1]), static_cast<int>(t.shape[0]),
              static_cast<ptrdiff_t>(t.shape[1]) * 3, edgesdk::ColorOrder::BGR};
  return img;
}

Image read_image(const std::string& path) {
  if (ends_with(path, ".ppm")) return read_ppm(path);
  if (ends_with(path, ".npy")) return read_npy_frame(path);
#if defined(EDGESDK_HAVE_STB)
  int w = 0, h = 0, n = 0;
  uint8_t* data = stbi_load(path.c_str(), &w, &h, &n, 3);
  if (!data) throw UsageError(path + ": cannot read this image (" + stbi_failure_reason() + ")");
  Image img;
  img.pixels.reset(data, [](uint8_t* p) { stbi_image_free(p); });
  img.view = {data, w, h, static_cast<ptrdiff_t>(w) * 3, edgesdk::ColorOrder::RGB};
  return img;
#else
  throw UsageError(path + ": this edgesdk-run reads .ppm and .npy frames (built without libstb-dev for JPEG/PNG)");
#endif
}

// A strided float32 output tensor -> contiguous values in C order.
std::vector<float> values(const edgesdk::Tensor& t) {
  std::vector<float> out(t.count());
  if (out.empty()) return out;
  std::vector<int64_t> idx(t.shape.size(), 0);
  const char* base = static_cast<const char*>(t.data);
  for (size_t i = 0; i < out.size(); ++i) {
    int64_t off = 0;
    for (size_t k = 0; k < idx.size(); ++k) off += idx[k] * t.strides[k];
    std::memcpy(&out[i], base + off, 4);
    for (size_t k = idx.size(); k-- > 0;) {
      if (++idx[k] < t.shape[k]) break;
      idx[k] = 0;
    }
  }
  return out;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string json_str(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') out += '\\', out += static_cast<char>(c);
    else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else out += static_cast<char>(c);
  }
  return out + "\"";
}

std::string num(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

struct Top {
  int index;
  double score;
};

// The Python topk postprocessor: softmax unless the scores already are probabilities, then the best k.
std::vector<Top> topk(const std::vector<float>& raw, int k) {
  std::vector<double> p(raw.begin(), raw.end());
  const double lo = *std::min_element(p.begin(), p.end()), hi = *std::max_element(p.begin(), p.end());
  const double sum = std::accumulate(p.begin(), p.end(), 0.0);
  if (!(lo >= 0 && hi <= 1 && std::fabs(sum - 1) < 1e-3)) {
    double total = 0;
    for (double& v : p) total += (v = std::exp(v - hi));
    for (double& v : p) v /= total;
  }
  std::vector<int> order(p.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
  std::vector<Top> top;
  for (int i = 0; i < std::min<int>(k, static_cast<int>(p.size())); ++i) top.push_back({order[i], p[order[i]]});
  return top;
}

size_t input_index(const edgesdk::EngineModel& model, const std::string& name) {
  for (size_t i = 0; i < model.inputs().size(); ++i)
    if (model.inputs()[i].name == name) return i;
  throw edgesdk::BundleError("golden input '" + name + "' is not an input of the model");
}

size_t output_index(const edgesdk::EngineModel& model, const std::string& name) {
  for (size_t i = 0; i < model.outputs().size(); ++i)
    if (model.outputs()[i].name == name) return i;
  throw edgesdk::BundleError("golden output '" + name + "' is not an output of the model");
}

// --check: the golden inputs through the engine against the reference outputs the build stored.
int check(const edgesdk::Bundle& bundle, const edgesdk::EngineModel& model) {
  if (bundle.golden.empty()) throw edgesdk::BundleError(bundle.root + ": bundle has no golden samples");
  const double min_cos = bundle.min_cosine > 0 ? bundle.min_cosine
                         : bundle.precision == "fp32" ? 0.9999 : bundle.precision == "fp16" ? 0.999 : 0.99;
  auto state = model.new_state();
  bool ok = true;
  for (size_t s = 0; s < bundle.golden.size(); ++s) {
    std::vector<edgesdk::Tensor> feeds;  // alive until run() returns
    for (const auto& in : bundle.golden[s].inputs) {
      feeds.push_back(edgesdk::read_npy(bundle.path(in.second)));
      state->set_input(input_index(model, in.first), feeds.back());
    }
    state->run();
    for (const auto& out : bundle.golden[s].outputs) {
      const std::vector<float> ref = values(edgesdk::read_npy(bundle.path(out.second)));
      const std::vector<float> got = values(state->output(output_index(model, out.first)));
      if (ref.size() != got.size()) {
        std::printf("sample %zu %s: %zu values, reference has %zu\n", s, out.first.c_str(), got.size(), ref.size());
        ok = false;
        continue;
      }
      double dot = 0, nr = 0, ng = 0, max_abs = 0;
      for (size_t i = 0; i < ref.size(); ++i) {
        dot += double(ref[i]) * got[i], nr += double(ref[i]) * ref[i], ng += double(got[i]) * got[i];
        max_abs = std::max(max_abs, std::fabs(double(ref[i]) - got[i]));
      }
      const double cosine = nr == 0 && ng == 0 ? 1.0 : dot / std::sqrt(nr * ng + 1e-300);
      const bool top1 = std::max_element(ref.begin(), ref.end()) - ref.begin() == std::max_element(got.begin(), got.end()) - got.begin();
      const bool pass = cosine >= min_cos && top1;
      ok = ok && pass;
      std::printf("sample %zu %-12s cosine %.6f  max_abs %.5f  top1 %s  %s\n", s, out.first.c_str(), cosine, max_abs,
                  top1 ? "same" : "DIFFERENT", pass ? "ok" : "FAIL");
    }
  }
  std::printf("golden check (min cosine %.4f, same top-1): %s\n", min_cos, ok ? "passed" : "FAILED");
  return ok ? 0 : 1;
}

void usage(FILE* to) {
  std::fprintf(to,
               "usage: edgesdk-run BUNDLE IMAGE [--threads N] [--repeat N] [--top K] [--json] [--no-verify]\n"
               "       edgesdk-run BUNDLE --check [--threads N] [--no-verify]\n"
               "IMAGE: .ppm (P6), .npy (HxWx3 uint8 BGR)%s\n",
#if defined(EDGESDK_HAVE_STB)
               ", .jpg, .png, .bmp"
#else
               ""
#endif
  );
}

int to_int(const std::string& flag, const char* v, int lo) {
  char* end = nullptr;
  const long n = v ? std::strtol(v, &end, 10) : 0;
  if (!v || *end || n < lo || n > 1 << 20) throw UsageError(flag + ": expected an integer >= " + std::to_string(lo));
  return static_cast<int>(n);
}

int run(int argc, char** argv) {
  std::vector<std::string> pos;
  int threads = 0, repeat = 10, top = 0;
  bool json = false, verify = true, do_check = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const char* next = i + 1 < argc ? argv[i + 1] : nullptr;
    if (a == "-h" || a == "--help") return usage(stdout), 0;
    if (a == "--threads") threads = to_int(a, next, 1), ++i;
    else if (a == "--repeat") repeat = to_int(a, next, 1), ++i;
    else if (a == "--top") top = to_int(a, next, 1), ++i;
    else if (a == "--json") json = true;
    else if (a == "--no-verify") verify = false;
    else if (a == "--check") do_check = true;
    else if (a.size() > 1 && a[0] == '-') throw UsageError("unknown option " + a);
    else pos.push_back(a);
  }
  if (pos.size() != (do_check ? 1u : 2u)) {
    usage(stderr);
    return 2;
  }

  auto t0 = Clock::now();
  const edgesdk::Bundle bundle = edgesdk::read_bundle(pos[0], verify);
  const double read_ms = ms_since(t0);
  t0 = Clock::now();
  const std::shared_ptr<const edgesdk::EngineModel> model = edgesdk::open_bundle(bundle, threads);
  const double open_ms = ms_since(t0);
  if (!json)
    std::printf("bundle %s: %s %s for %s (%s), %d threads; %s kernels on %s\n", bundle.root.c_str(), bundle.backend.c_str(),
                bundle.precision.c_str(), bundle.target.c_str(), bundle.arch.c_str(), model->threads(),
                edgesdk::preprocess_kernels(), edgesdk::arch());
  if (do_check) return check(bundle, *model);

  if (!bundle.has_preprocess)
    throw UsageError(bundle.root + ": bundle has no preprocessing spec, so it takes tensors, not images (try --check)");
  t0 = Clock::now();
  const Image image = read_image(pos[1]);
  const double decode_ms = ms_since(t0);
  auto state = model->new_state();
  std::vector<double> pre, infer;
  for (int r = 0; r < repeat; ++r) {
    t0 = Clock::now();
    state->set_frame(0, image.view, bundle.preprocess, 1);
    pre.push_back(ms_since(t0));
    t0 = Clock::now();
    state->run();
    infer.push_back(ms_since(t0));
  }
  const double first_infer = infer.front();
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
  };

  std::vector<std::vector<float>> outs;
  for (size_t i = 0; i < model->outputs().size(); ++i) outs.push_back(values(state->output(i)));
  const int k = top > 0 ? top : bundle.topk;
  const bool classify = bundle.postprocess == "topk" && !outs.empty() && !outs[0].empty();
  const std::vector<Top> best = classify ? topk(outs[0], k) : std::vector<Top>{};
  auto label = [&](int i) { return i < static_cast<int>(bundle.labels.size()) ? bundle.labels[i] : std::to_string(i); };

  if (json) {
    std::string s = "{\"bundle\": " + json_str(bundle.root) + ", \"backend\": " + json_str(bundle.backend) +
                    ", \"precision\": " + json_str(bundle.precision) + ", \"arch\": " + json_str(edgesdk::arch()) +
                    ", \"kernels\": " + json_str(edgesdk::preprocess_kernels()) + ", \"threads\": " + std::to_string(model->threads()) +
                    ", \"image\": {\"path\": " + json_str(pos[1]) + ", \"width\": " + std::to_string(image.view.width) +
                    ", \"height\": " + std::to_string(image.view.height) + "}, \"outputs\": {";
    for (size_t i = 0; i < outs.size(); ++i) {
      const edgesdk::Tensor t = state->output(i);
      s += (i ? ", " : "") + json_str(model->outputs()[i].name) + ": {\"shape\": " + shape_str(t.shape) + ", \"data\": [";
      for (size_t j = 0; j < outs[i].size(); ++j) s += (j ? "," : "") + num(outs[i][j]);
      s += "]}";
    }
    s += "}, \"topk\": [";
    for (size_t i = 0; i < best.size(); ++i)
      s += std::string(i ? ", " : "") + "{\"index\": " + std::to_string(best[i].index) + ", \"label\": " +
           json_str(label(best[i].index)) + ", \"score\": " + num(best[i].score) + "}";
    s += "], \"timing_ms\": {\"read_bundle\": " + num(read_ms) + ", \"open\": " + num(open_ms) + ", \"decode\": " +
         num(decode_ms) + ", \"preprocess\": " + num(median(pre)) + ", \"infer\": " + num(median(infer)) +
         ", \"infer_first\": " + num(first_infer) + ", \"runs\": " + std::to_string(repeat) + "}}\n";
    std::fputs(s.c_str(), stdout);
    return 0;
  }

  std::printf("image %s: %dx%d\n", pos[1].c_str(), image.view.width, image.view.height);
  for (size_t i = 0; i < outs.size(); ++i) {
    const std::vector<float>& v = outs[i];
    const auto mm = std::minmax_element(v.begin(), v.end());
    std::printf("output %s %s: min %.4f max %.4f first [", model->outputs()[i].name.c_str(),
                shape_str(state->output(i).shape).c_str(), v.empty() ? 0.0 : *mm.first, v.empty() ? 0.0 : *mm.second);
    for (size_t j = 0; j < std::min<size_t>(v.size(), 5); ++j) std::printf("%s%.4f", j ? ", " : "", v[j]);
    std::printf("%s]\n", v.size() > 5 ? ", ..." : "");
  }
  for (size_t i = 0; i < best.size(); ++i)
    std::printf("top%zu %5.1f%%  %4d  %s\n", i + 1, 100.0 * best[i].score, best[i].index, label(best[i].index).c_str());
  std::printf("time: read+verify %.1f ms, open %.1f ms, decode %.1f ms, preprocess %.2f ms, infer %.1f ms "
              "(median of %d; first %.1f ms)\n",
              read_ms, open_ms, decode_ms, median(pre), median(infer), repeat, first_infer);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "edgesdk-run: %s\n", e.what());
  } catch (const edgesdk::BundleError& e) {
    std::fprintf(stderr, "edgesdk-run: %s\n", e.what());
  } catch (const edgesdk::PreprocessError& e) {
    std::fprintf(stderr, "edgesdk-run: %s\n", e.what());
  } catch (const edgesdk::EngineUnavailable& e) {
    std::fprintf(stderr, "edgesdk-run: %s\n", e.what());
  } catch (const edgesdk::EngineError& e) {
    std::fprintf(stderr, "edgesdk-run: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "edgesdk-run: internal error: %s\n", e.what());
    return 1;
  }
  return 2;
}
