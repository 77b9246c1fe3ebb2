// oneDNN baseline for deSpeckNet's convolutions: times oneDNN's f32 3x3 convolution (stride 1,
// padding 1, so the output is H x W like the input) on the CPU, forward (with bias), backward-data
// and backward-weights (with the bias gradient), with the direct and the Winograd algorithm, so that
// despeck's own kernels can be set beside it. The defaults are deSpeckNet's hidden convolution,
// 64 -> 64 channels (15 of the 17 in each branch), on a training batch of 16 patches of 40 x 40;
// --cin 1/2 or --cout 1/2 give the first and last layers.
//
// Activations (src, dst and their gradients) are forced to NHWC, despeck's layout, so no layout
// change is hidden in oneDNN's favour. Weights use the format oneDNN picks ("any"); the reorder from
// the plain OIHW weights happens once, before timing, as a framework would cache it.
// With --activations any, oneDNN also picks the activations' layout (a blocked nChw16c on AVX-512;
// oneDNN 2.6's Winograd exists only for that); the timings then leave out the reorders from and to
// NHWC, which are timed apart as "reorder_ms".
//
// One JSON object per line on stdout (JSON Lines), one per (pass, algorithm). A combination that
// oneDNN cannot build (Winograd on NHWC, or for some shapes or CPUs) is reported with "status":
// "unsupported" and null timings instead of failing the run.
//
//   onednn_conv [--batch N] [--height H] [--width W] [--cin C] [--cout O] [--threads T]
//               [--repeats R] [--warmup K] [--pass forward|backward_data|backward_weights|all]
//               [--algorithm direct|winograd|all] [--activations nhwc|any]
//
// Build (also done by benchmarks/CMakeLists.txt when libdnnl-dev is installed):
//   g++ -O2 -std=c++20 -fopenmp benchmarks/onednn_conv.cpp -ldnnl -o onednn_conv
#include <dnnl.hpp>
#include <nlohmann/json.hpp>
#include <omp.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <new>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace {

using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

constexpr int exit_usage = 2;

enum class Pass { forward, backward_data, backward_weights };
enum class Algo { direct, winograd };

const char* name(Pass p) {
  switch (p) {
    case Pass::forward: return "forward";
    case Pass::backward_data: return "backward_data";
    case Pass::backward_weights: return "backward_weights";
  }
  return "?";
}
const char* name(Algo a) { return a == Algo::direct ? "direct" : "winograd"; }
dnnl::algorithm to_dnnl(Algo a) {
  return a == Algo::direct ? dnnl::algorithm::convolution_direct : dnnl::algorithm::convolution_winograd;
}

struct Options {
  std::int64_t batch = 16, height = 40, width = 40, cin = 64, cout = 64;
  int threads = 0;  // 0: not given, keep OpenMP's default (OMP_NUM_THREADS or all cores)
  int repeats = 30, warmup = 5;
  bool blocked = false;  // --activations any: let oneDNN pick the activations' layout too
  std::vector<Pass> passes{Pass::forward, Pass::backward_data, Pass::backward_weights};
  std::vector<Algo> algos{Algo::direct, Algo::winograd};
};

const char* const usage_text =
    "usage: onednn_conv [--batch N] [--height H] [--width W] [--cin C] [--cout O] [--threads T]\n"
    "                   [--repeats R] [--warmup K]\n"
    "                   [--pass forward|backward_data|backward_weights|all]\n"
    "                   [--algorithm direct|winograd|all] [--activations nhwc|any]\n"
    "Times oneDNN's f32 3x3 convolution (stride 1, padding 1, NHWC activations).\n"
    "Defaults: --batch 16 --height 40 --width 40 --cin 64 --cout 64 --repeats 30 --warmup 5,\n"
    "all passes and algorithms, --activations nhwc, OpenMP's default thread count.\n"
    "--activations any lets oneDNN pick a blocked layout (its Winograd needs one) and reports the\n"
    "NHWC reorders an NHWC caller would add as reorder_ms. Prints one JSON object per line.\n";

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "onednn_conv: %s\n(run onednn_conv --help for the options)\n", message.c_str());
  std::exit(exit_usage);
}

// A whole decimal integer in [lo, hi], or a usage error naming the option and the value.
std::int64_t parse_int(std::string_view option, std::string_view value, std::int64_t lo, std::int64_t hi) {
  std::int64_t v = 0;
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
  if (value.empty() || ec != std::errc{} || end != value.data() + value.size() || v < lo || v > hi)
    usage_error(std::string(option) + ": expected an integer from " + std::to_string(lo) + " to " +
                std::to_string(hi) + ", got '" + std::string(value) + "'");
  return v;
}

Options parse_args(int argc, char** argv) {
  Options o;
  // Sizes up to 2^20 each; the tensors' element counts are checked below.
  constexpr std::int64_t max_dim = std::int64_t{1} << 20;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(usage_text, stdout);
      std::exit(0);
    }
    std::string_view option = arg, value;
    bool have_value = false;
    if (const auto eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      option = arg.substr(0, eq);  // --option=value
      value = arg.substr(eq + 1);
      have_value = true;
    }
    const auto next = [&]() -> std::string_view {
      if (have_value) return value;
      if (i + 1 >= argc) usage_error(std::string(option) + ": missing value");
      return argv[++i];
    };
    if (option == "--batch") o.batch = parse_int(option, next(), 1, max_dim);
    else if (option == "--height") o.height = parse_int(option, next(), 1, max_dim);
    else if (option == "--width") o.width = parse_int(option, next(), 1, max_dim);
    else if (option == "--cin") o.cin = parse_int(option, next(), 1, max_dim);
    else if (option == "--cout") o.cout = parse_int(option, next(), 1, max_dim);
    else if (option == "--threads") o.threads = static_cast<int>(parse_int(option, next(), 1, 4096));
    else if (option == "--repeats") o.repeats = static_cast<int>(parse_int(option, next(), 1, 1000000));
    else if (option == "--warmup") o.warmup = static_cast<int>(parse_int(option, next(), 0, 1000000));
    else if (option == "--pass") {
      const std::string_view v = next();
      if (v == "forward") o.passes = {Pass::forward};
      else if (v == "backward_data") o.passes = {Pass::backward_data};
      else if (v == "backward_weights") o.passes = {Pass::backward_weights};
      else if (v != "all")
        usage_error("--pass: expected forward, backward_data, backward_weights or all, got '" + std::string(v) + "'");
    } else if (option == "--algorithm") {
      const std::string_view v = next();
      if (v == "direct") o.algos = {Algo::direct};
      else if (v == "winograd") o.algos = {Algo::winograd};
      else if (v != "all") usage_error("--algorithm: expected direct, winograd or all, got '" + std::string(v) + "'");
    } else if (option == "--activations") {
      const std::string_view v = next();
      if (v == "nhwc") o.blocked = false;
      else if (v == "any") o.blocked = true;
      else usage_error("--activations: expected nhwc or any, got '" + std::string(v) + "'");
    } else {
      usage_error("unknown option '" + std::string(arg) + "'");
    }
  }
  // Each tensor must stay well inside memory and int64 arithmetic: at most 2^32 floats (16 GiB).
  const auto check_elements = [](const char* what, std::initializer_list<std::int64_t> sizes) {
    long double n = 1;
    for (const auto s : sizes) n *= static_cast<long double>(s);
    if (n > 4294967296.0L) {
      char count[32];
      std::snprintf(count, sizeof count, "%.3Lg", n);
      usage_error(std::string(what) + " = " + count + " elements in one tensor, more than the 2^32 allowed");
    }
  };
  check_elements("--batch x --height x --width x --cin", {o.batch, o.height, o.width, o.cin});
  check_elements("--batch x --height x --width x --cout", {o.batch, o.height, o.width, o.cout});
  check_elements("--cout x --cin x 9", {o.cout, o.cin, 9});
  return o;
}

// Deterministic inputs in [-1, 1): xorshift32 from a fixed seed per tensor. Not zeros, so no
// kernel can take a shortcut, and the same on every run.
void fill(dnnl::memory& m, std::uint32_t seed) {
  auto* p = static_cast<float*>(m.get_data_handle());
  const std::size_t n = m.get_desc().get_size() / sizeof(float);
  std::uint32_t s = seed ? seed : 1u;
  for (std::size_t i = 0; i < n; ++i) {
    s ^= s << 13;
    s ^= s >> 17;
    s ^= s << 5;
    p[i] = static_cast<float>(s >> 8) * (2.0f / 16777216.0f) - 1.0f;
  }
}

struct Timing {
  double median_ms, min_ms, max_ms;
};

// Runs `call` warmup times untimed, then times `repeats` calls one by one.
Timing time_calls(const std::function<void()>& call, int warmup, int repeats) {
  for (int i = 0; i < warmup; ++i) call();
  std::vector<double> ms(static_cast<std::size_t>(repeats));
  for (auto& t : ms) {
    const auto t0 = std::chrono::steady_clock::now();
    call();
    const auto t1 = std::chrono::steady_clock::now();
    t = std::chrono::duration<double, std::milli>(t1 - t0).count();
  }
  std::sort(ms.begin(), ms.end());
  const std::size_t n = ms.size();
  const double median = n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
  return {median, ms.front(), ms.back()};
}

// Rounded to `digits` decimals; dividing by a power of ten keeps the printed JSON number short.
double round_to(double v, int digits) {
  const double scale = std::pow(10.0, digits);
  return std::round(v * scale) / scale;
}

class Bench {
 public:
  explicit Bench(const Options& o)
      : o_(o),
        eng_(dnnl::engine::kind::cpu, 0),
        strm_(eng_),
        src_nhwc_({o.batch, o.cin, o.height, o.width}, dt::f32, tag::nhwc),
        dst_nhwc_({o.batch, o.cout, o.height, o.width}, dt::f32, tag::nhwc),
        src_md_(o.blocked ? dnnl::memory::desc(src_nhwc_.dims(), dt::f32, tag::any) : src_nhwc_),
        dst_md_(o.blocked ? dnnl::memory::desc(dst_nhwc_.dims(), dt::f32, tag::any) : dst_nhwc_),
        user_w_md_({o.cout, o.cin, 3, 3}, dt::f32, tag::oihw),
        any_w_md_({o.cout, o.cin, 3, 3}, dt::f32, tag::any),
        bias_md_({o.cout}, dt::f32, tag::x) {
    // Scratchpad passed by us, so that no allocation happens inside a timed call.
    attr_.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  }

  nlohmann::ordered_json run(Pass pass, Algo algo) {
    auto row = header(pass, algo);
    try {
      Prepared p = prepare(pass, algo);
      const Timing t = time_calls(p.call, o_.warmup, o_.repeats);
      // The direct convolution's multiply-adds, the same for every pass and algorithm: for Winograd
      // this is an "effective" rate.
      const double flops = 2.0 * static_cast<double>(o_.batch) * static_cast<double>(o_.height) *
                           static_cast<double>(o_.width) * static_cast<double>(o_.cin) *
                           static_cast<double>(o_.cout) * 9.0;
      row["median_ms"] = round_to(t.median_ms, 4);
      row["min_ms"] = round_to(t.min_ms, 4);
      row["max_ms"] = round_to(t.max_ms, 4);
      row["gflops"] = round_to(flops / (t.median_ms * 1e6), 2);
      row["status"] = "ok";
      row["impl"] = p.impl;
      row["activations"] = p.layout;
      if (o_.blocked) {
        // What a caller holding NHWC tensors would add per call: the activations' reorders into
        // and out of oneDNN's layout (not part of median_ms).
        const auto reorders = [&] {
          for (auto& [r, from, to] : p.reorders) r.execute(strm_, from, to);
          strm_.wait();
        };
        row["reorder_ms"] = p.reorders.empty() ? 0.0 : round_to(time_calls(reorders, o_.warmup, o_.repeats).median_ms, 4);
      }
    } catch (const dnnl::error& e) {
      for (const char* k : {"median_ms", "min_ms", "max_ms", "gflops"}) row[k] = nullptr;
      row["status"] = "unsupported";
      row["error"] = std::string(e.what()) + " (status " + std::to_string(static_cast<int>(e.status)) + ")";
    }
    return row;
  }

 private:
  struct Reorder {
    dnnl::reorder prim;
    dnnl::memory from, to;
  };
  struct Prepared {
    std::function<void()> call;  // one execution, waited for
    std::string impl;            // oneDNN's implementation name, e.g. "brgconv:avx512_core"
    std::string layout;          // the activations' layout oneDNN ran on
    std::vector<Reorder> reorders;
  };

  nlohmann::ordered_json header(Pass pass, Algo algo) const {
    const dnnl_version_t* v = dnnl_version();
    nlohmann::ordered_json row;
    row["library"] = "onednn";
    row["version"] = std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
    row["pass"] = name(pass);
    row["algorithm"] = name(algo);
    row["batch"] = o_.batch;
    row["height"] = o_.height;
    row["width"] = o_.width;
    row["cin"] = o_.cin;
    row["cout"] = o_.cout;
    row["threads"] = o_.threads > 0 ? o_.threads : omp_get_max_threads();
    row["omp_max_threads"] = omp_get_max_threads();
    row["repeats"] = o_.repeats;
    row["warmup"] = o_.warmup;
    row["activations"] = o_.blocked ? "any" : "nhwc";  // replaced by the layout used when it runs
    return row;
  }

  dnnl::memory make(const dnnl::memory::desc& md, std::uint32_t seed = 0) {
    dnnl::memory m(md, eng_);
    if (seed) fill(m, seed);
    return m;
  }
  void reorder_now(dnnl::memory& from, dnnl::memory& to) {
    dnnl::reorder(from, to).execute(strm_, from, to);
    strm_.wait();
  }

  // Plain OIHW weights with the deterministic pattern, reordered (untimed) into `md` if oneDNN chose
  // another format.
  dnnl::memory weights_in(const dnnl::memory::desc& md) {
    dnnl::memory user = make(user_w_md_, 2);
    if (md == user_w_md_) return user;
    dnnl::memory w(md, eng_);
    reorder_now(user, w);
    return w;
  }
  // An activation read by the primitive: filled in NHWC, then (untimed) put in oneDNN's layout `md`
  // when that differs; the reorder is kept for "reorder_ms".
  dnnl::memory activation_in(const dnnl::memory::desc& md, const dnnl::memory::desc& nhwc, std::uint32_t seed,
                             Prepared& p) {
    dnnl::memory user = make(nhwc, seed);
    if (md == nhwc) return user;
    dnnl::memory m(md, eng_);
    reorder_now(user, m);
    p.reorders.push_back({dnnl::reorder(user, m), user, m});
    return m;
  }
  // An activation written by the primitive, and its way back to NHWC for "reorder_ms".
  dnnl::memory activation_out(const dnnl::memory::desc& md, const dnnl::memory::desc& nhwc, Prepared& p) {
    dnnl::memory m = make(md);
    if (md == nhwc) return m;
    dnnl::memory user = make(nhwc);
    p.reorders.push_back({dnnl::reorder(m, user), m, user});
    return m;
  }
  static std::string layout_name(const dnnl::memory::desc& md) {
    for (const auto& [t, n] : {std::pair{tag::nhwc, "nhwc"}, std::pair{tag::nChw16c, "nChw16c"},
                               std::pair{tag::nChw8c, "nChw8c"}, std::pair{tag::nchw, "nchw"}})
      if (md == dnnl::memory::desc(md.dims(), dt::f32, t)) return n;
    return "other";
  }

  // The forward descriptor; the backward passes also need it as a hint for the weights format.
  dnnl::convolution_forward::primitive_desc forward_pd(dnnl::algorithm alg, const dnnl::primitive_attr& attr) {
    const dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_training, alg, src_md_, any_w_md_, bias_md_,
                                            dst_md_, {1, 1}, {1, 1}, {1, 1});
    return {d, attr, eng_};
  }
  // The hint uses the same algorithm when oneDNN has it, else the direct one: a backward Winograd
  // may exist where the forward one does not.
  dnnl::convolution_forward::primitive_desc hint_pd(dnnl::algorithm alg) {
    try {
      return forward_pd(alg, {});
    } catch (const dnnl::error&) {
      if (alg == dnnl::algorithm::convolution_direct) throw;
      return forward_pd(dnnl::algorithm::convolution_direct, {});
    }
  }

  // Builds the primitive and its memory for one (pass, algorithm). Throws dnnl::error when oneDNN
  // has no implementation for it.
  Prepared prepare(Pass pass, Algo algo) {
    const dnnl::algorithm alg = to_dnnl(algo);
    Prepared p;
    dnnl::primitive prim;
    std::unordered_map<int, dnnl::memory> args;
    switch (pass) {
      case Pass::forward: {
        const auto pd = forward_pd(alg, attr_);
        prim = dnnl::convolution_forward(pd);
        p.impl = pd.impl_info_str();
        p.layout = layout_name(pd.src_desc());
        args = {{DNNL_ARG_SRC, activation_in(pd.src_desc(), src_nhwc_, 1, p)},
                {DNNL_ARG_WEIGHTS, weights_in(pd.weights_desc())},
                {DNNL_ARG_BIAS, make(pd.bias_desc(), 3)},
                {DNNL_ARG_DST, activation_out(pd.dst_desc(), dst_nhwc_, p)},
                {DNNL_ARG_SCRATCHPAD, make(pd.scratchpad_desc())}};
        break;
      }
      case Pass::backward_data: {
        const dnnl::convolution_backward_data::desc d(alg, src_md_, any_w_md_, dst_md_, {1, 1}, {1, 1}, {1, 1});
        const dnnl::convolution_backward_data::primitive_desc pd(d, attr_, eng_, hint_pd(alg));
        prim = dnnl::convolution_backward_data(pd);
        p.impl = pd.impl_info_str();
        p.layout = layout_name(pd.diff_src_desc());
        args = {{DNNL_ARG_DIFF_DST, activation_in(pd.diff_dst_desc(), dst_nhwc_, 4, p)},
                {DNNL_ARG_WEIGHTS, weights_in(pd.weights_desc())},
                {DNNL_ARG_DIFF_SRC, activation_out(pd.diff_src_desc(), src_nhwc_, p)},
                {DNNL_ARG_SCRATCHPAD, make(pd.scratchpad_desc())}};
        break;
      }
      case Pass::backward_weights: {
        // The weight gradient stays in oneDNN's format: 9 x cin x cout floats, small beside the
        // activations, so its reorder is not counted.
        const dnnl::convolution_backward_weights::desc d(alg, src_md_, any_w_md_, bias_md_, dst_md_, {1, 1}, {1, 1},
                                                         {1, 1});
        const dnnl::convolution_backward_weights::primitive_desc pd(d, attr_, eng_, hint_pd(alg));
        prim = dnnl::convolution_backward_weights(pd);
        p.impl = pd.impl_info_str();
        p.layout = layout_name(pd.src_desc());
        args = {{DNNL_ARG_SRC, activation_in(pd.src_desc(), src_nhwc_, 1, p)},
                {DNNL_ARG_DIFF_DST, activation_in(pd.diff_dst_desc(), dst_nhwc_, 4, p)},
                {DNNL_ARG_DIFF_WEIGHTS, make(pd.diff_weights_desc())},
                {DNNL_ARG_DIFF_BIAS, make(pd.diff_bias_desc())},
                {DNNL_ARG_SCRATCHPAD, make(pd.scratchpad_desc())}};
        break;
      }
    }
    p.call = [this, prim, args]() {
      prim.execute(strm_, args);
      strm_.wait();
    };
    return p;
  }

  Options o_;
  dnnl::engine eng_;
  dnnl::stream strm_;
  dnnl::primitive_attr attr_;
  // Activations: NHWC as the caller holds them, and as given to oneDNN (NHWC, or "any").
  dnnl::memory::desc src_nhwc_, dst_nhwc_, src_md_, dst_md_;
  dnnl::memory::desc user_w_md_, any_w_md_, bias_md_;
};

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse_args(argc, argv);
  // oneDNN in Debian runs on OpenMP: its thread count is OpenMP's, set before any primitive exists.
  if (o.threads > 0) omp_set_num_threads(o.threads);
  try {
    Bench bench(o);
    for (const Pass p : o.passes)
      for (const Algo a : o.algos) {
        std::printf("%s\n", bench.run(p, a).dump().c_str());
        std::fflush(stdout);
      }
  } catch (const dnnl::error& e) {
    std::fprintf(stderr, "onednn_conv: oneDNN error: %s (status %d)\n", e.what(), static_cast<int>(e.status));
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "onednn_conv: out of memory for these shapes\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "onednn_conv: %s\n", e.what());
    return 1;
  }
  return 0;
}
