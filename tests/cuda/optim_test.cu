// The optimizers on the device (slowmo::cuda::Device): host-only checks (suite "host", no
// GPU needed) and, on a GPU (suite "device"), parity with the CPU, device vectors, state,
// and the shape of a step (one kernel, no host round trip).
//
// Parity bound: 0 ulp. The CPU loop (reference.cpp, built by the host compiler like any user
// program) and the kernel apply the same rule to the same inputs;
// on the device the rule runs on cuda::detail::Exact<T>, whose + - * / sqrt are the
// correctly rounded IEEE-754 intrinsics that nvcc never fuses into FMAs, and on the CPU on
// SSE/AVX packets or scalars, also correctly rounded and not fused (this project compiles
// the CPU path without FMA contraction: no -march, no -mfma). Coefficients are computed once
// on the host, in the same code, for both. Each element therefore sees the same sequence of
// roundings: the trajectories (and the optimizer states) must agree bit for bit. A host
// compiled with FMA contraction would break this; the test then says by how many ulps.
// First, alone: the nvcc-only headers of slowmo/cuda compile on their own (the host header
// check cannot compile them); the other CUDA programs start with the others.
#include <slowmo/cuda/device.hpp>
#include <slowmo/cuda/device.hpp>  // and the include guard works

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <slowmo/cuda.hpp>

#include "cuda/parity.hpp"

using namespace slowmo;
using cuda::DeviceSpan;
using cuda::DeviceVector;
using Const = schedule::Constant;

// ---- compile time: the device optimizers are Optimizers, in the Device space ----------
static_assert(MemorySpace<cuda::Device>);
static_assert(Optimizer<cuda::Sgd<float>> && Optimizer<cuda::Sgd<double>>);
static_assert(Optimizer<cuda::Nesterov<float>> && Optimizer<cuda::Nesterov<double>>);
static_assert(Optimizer<cuda::Adam<float>> && Optimizer<cuda::AdamW<double>>);
static_assert(Optimizer<cuda::Adam<float, schedule::Sequence<schedule::Linear, schedule::Cosine>>>);
static_assert(Optimizer<Lookahead<cuda::AdamW<float>>> && Optimizer<Lookahead<Lookahead<cuda::Sgd<double>>>>);
static_assert(std::same_as<cuda::Adam<float>, Adam<float, Const, cuda::Device>>);
static_assert(std::same_as<Lookahead<cuda::Adam<float>>::space_type, cuda::Device>);
static_assert(std::same_as<Lookahead<cuda::Adam<float>>::vector_type, DeviceVector<float>>);
static_assert(Optimizer<SlowMo<cuda::Nesterov<float>, SingleWorker>>);
static_assert(Optimizer<cuda::RMSprop<float>> && Optimizer<cuda::Adagrad<double>> && Optimizer<cuda::NAdam<float>>);
static_assert(Optimizer<cuda::Adamax<double>> && Optimizer<cuda::Qhm<float>> && Optimizer<cuda::QhAdam<double>>);
static_assert(Optimizer<cuda::Lion<float>> && HasReduction<cuda::Device>);
static_assert(Optimizer<cuda::DeltaSgd<float>> && Optimizer<Savic<double, savic::RmsProp, cuda::Device>>);
// The gradient modifiers take the space of their base: their norm is a device reduction.
static_assert(Optimizer<ClipGradNorm<cuda::AdamW<float>>> && Optimizer<ClipGradValue<cuda::Sgd<double>>>);
static_assert(Optimizer<FedProx<cuda::Sgd<float>>> && Optimizer<SlowMo<ClipGradNorm<cuda::AdamW<float>>, SingleWorker>>);
static_assert(std::same_as<ClipGradNorm<cuda::Adam<float>>::vector_type, DeviceVector<float>>);
static_assert(!cuda::Device::communicates_with<sim::Comm> && !cuda::Device::communicates_with<threads::Comm>);
template <class O, class X>
concept StepsOn = requires(O& o, X& x) { o.step(x, x); };
static_assert(StepsOn<cuda::Adam<float>, DeviceVector<float>> && !StepsOn<cuda::Adam<float>, Vector<float>>);
static_assert(!StepsOn<Adam<float>, DeviceVector<float>>);

namespace {

using parity::Config;

/// Distance in units in the last place (0 for equal values, also +0 and -0).
template <class T>
std::int64_t ulp_distance(T a, T b) {
  if (a == b) return 0;
  if (std::isnan(a) || std::isnan(b)) return INT64_MAX;
  using I = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;
  auto ordered = [](T v) {
    I i;
    std::memcpy(&i, &v, sizeof v);
    return i < 0 ? std::int64_t(std::numeric_limits<I>::min()) - std::int64_t(i) : std::int64_t(i);
  };
  const std::int64_t d = ordered(a) - ordered(b);
  return d < 0 ? -d : d;
}

template <class T>
std::int64_t max_ulps(const Vector<T>& a, const Vector<T>& b) {
  REQUIRE(a.size() == b.size());
  std::int64_t worst = 0;
  for (Eigen::Index i = 0; i < a.size(); ++i) worst = std::max(worst, ulp_distance(a[i], b[i]));
  return worst;
}

constexpr std::int64_t kParityUlps = 0;  // see the top of this file

/// parity::steps steps of configuration c on the GPU, on n parameters placed `offset`
/// elements into their device buffers (offset 1 defeats 16-byte alignment: the kernel's
/// scalar path), against the CPU reference (reference.cpp): trajectories and states must
/// agree within kParityUlps.
template <class T>
void check_parity(Config c, Eigen::Index n, Eigen::Index offset) {
  CAPTURE(parity::name(c));
  CAPTURE(n);
  CAPTURE(offset);
  const parity::Problem<T> p(n);
  auto padded = [&](const Vector<T>& v) {
    Vector<T> h = Vector<T>::Constant(n + offset, T(-7));
    h.segment(offset, n) = v;
    return DeviceVector<T>::from_host(h);
  };
  DeviceVector<T> xd = padded(p.x0), gd = padded(Vector<T>::Zero(n)), ad = padded(p.a), cd = padded(p.c);
  const DeviceSpan<T> xs = xd.segment(offset, n), gs = gd.segment(offset, n);
  const DeviceSpan<const T> as = std::as_const(ad).segment(offset, n), cs = std::as_const(cd).segment(offset, n);
  parity::State device_state;
  parity::with_optimizer<T, cuda::Device>(c, [&](auto opt) {
    slowmo::start(opt, xs);
    for (int t = 0; t < parity::steps; ++t) {
      cuda::Device::for_each(n, parity::Problem<T>::gradient(t), gs.data(), xs.data(), as.data(), cs.data());
      opt.step(xs, gs);
    }
    device_state = parity::state_of(opt);
  });
  const Vector<T> back = xd.to_host();
  const parity::Trajectory<T> cpu = parity::cpu_reference<T>(c, n);
  const std::int64_t ulps = max_ulps<T>(back.segment(offset, n), cpu.x);
  MESSAGE(parity::name(c), ", n = ", n, ", offset ", offset, ": largest difference ", ulps, " ulp");
  CHECK(ulps <= kParityUlps);
  CHECK((back.head(offset).array() == T(-7)).all());  // nothing written outside the span

  REQUIRE(device_state.size() == cpu.state.size());
  for (const auto& [key, hv] : cpu.state) {
    CAPTURE(key);
    REQUIRE(device_state.count(key) == 1);
    const Vector<double>& dv = device_state.at(key);
    REQUIRE(dv.size() == hv.size());
    CHECK(max_ulps<double>(dv, hv) <= kParityUlps);  // T values widened exactly to double
  }
}

}  // namespace

TEST_SUITE("host") {
  TEST_CASE("device optimizers validate their options before any CUDA call") {
    CHECK_THROWS_WITH_AS(cuda::Sgd<float>({.momentum = -0.5}),
                         "slowmo::Sgd: option 'momentum' = -0.5 is invalid: must be finite and >= 0", invalid_option);
    CHECK_THROWS_WITH_AS(cuda::AdamW<double>({.betas = {0.9, 1.0}}),
                         "slowmo::AdamW: option 'betas[1]' = 1 is invalid: must be in [0, 1)", invalid_option);
    CHECK_THROWS_AS(Lookahead(cuda::Adam<float>(), {.k = 0}), invalid_option);
  }

  TEST_CASE("device optimizers check sizes before touching device memory") {
    float* none = nullptr;
    cuda::Adam<float> adam;
    CHECK_THROWS_WITH_AS(adam.step(DeviceSpan<float>(none, 3), DeviceSpan<const float>(none, 4)),
                         "slowmo::Adam::step: gradient size 4 does not match parameter size 3", size_mismatch);
    CHECK_THROWS_WITH_AS(adam.step(DeviceSpan<float>(none, 0), DeviceSpan<const float>(none, 0)),
                         "slowmo::Adam::step: the parameter vector is empty; pass at least one parameter",
                         size_mismatch);
    static SingleWorker one;
    SlowMo solo(cuda::Nesterov<double>({.lr = 0.1}), one, {.tau = 2});
    double* dnone = nullptr;
    CHECK_THROWS_WITH_AS(solo.step(DeviceSpan<double>(dnone, 5), DeviceSpan<const double>(dnone, 2)),
                         "slowmo::SlowMo::step: gradient size 2 does not match parameter size 5", size_mismatch);
    CHECK(adam.steps() == 0);
    // Delta-SGD's norms and Savic's scaling are device reductions and kernels: the checks come first.
    cuda::DeltaSgd<float> delta;
    CHECK_THROWS_WITH_AS(delta.step(DeviceSpan<float>(none, 3), DeviceSpan<const float>(none, 2)),
                         "slowmo::DeltaSgd::step: gradient size 2 does not match parameter size 3", size_mismatch);
    Savic<float, savic::Adam, cuda::Device> savic({.lr = 0.1});
    CHECK_THROWS_AS(savic.step(DeviceSpan<float>(none, 3), DeviceSpan<const float>(none, 3)), usage_error);
    CHECK(delta.steps() == 0);
    CHECK(savic.steps() == 0);
  }

  TEST_CASE("DeviceVector and DeviceSpan: errors that need no device") {
    CHECK_THROWS_WITH_AS(DeviceVector<float>(-3), "slowmo::cuda::DeviceVector: size -3 is negative", size_mismatch);
    const DeviceVector<double> empty;
    CHECK(empty.size() == 0);
    CHECK(empty.to_host().size() == 0);
    Vector<double> three(3);
    CHECK_THROWS_WITH_AS(empty.copy_to_host(three),
                         "slowmo::cuda::DeviceVector::copy_to_host: host vector size 3 does not match device vector "
                         "size 0",
                         size_mismatch);
    float* none = nullptr;
    const DeviceSpan<float> s(none, 10);
    CHECK(s.segment(2, 8).size() == 8);
    CHECK(s.segment(2, 8).data() == none + 2);
    CHECK_THROWS_WITH_AS(s.segment(3, 8), "slowmo::cuda::DeviceSpan::segment: [3, 3 + 8) is outside [0, 10)",
                         std::out_of_range);
    CHECK(cuda::as_span(s).size() == 10);
  }

  TEST_CASE("CUDA errors name the call, what it was doing and CUDA's own words") {
    try {
      cuda::check(cudaErrorMemoryAllocation, "cudaMalloc", " of ", 400, " bytes");
      FAIL("no exception");
    } catch (const cuda::cuda_error& e) {
      CHECK(e.code() == cudaErrorMemoryAllocation);
      const std::string what = e.what();
      CHECK(what.starts_with("slowmo::cuda: cudaMalloc of 400 bytes"));
      CHECK(what.find("failed: cudaErrorMemoryAllocation (out of memory)") != std::string::npos);
    }
    CHECK_NOTHROW(cuda::check(cudaSuccess, "anything"));
  }

  TEST_CASE("device_count: a number, and a reason when it is 0") {
    std::string why;
    const int n = cuda::device_count(&why);
    CHECK(n >= 0);
    if (n == 0) CHECK(!why.empty());
    MESSAGE("visible CUDA devices: ", n, (n == 0 ? " (" + why + ")" : std::string()));
  }
}

TEST_SUITE("device") {
  TEST_CASE_TEMPLATE("DeviceVector: copies, views, sizes", T, float, double) {
    const Vector<T> h = Vector<T>::LinSpaced(1001, T(-2), T(3));
    DeviceVector<T> d = DeviceVector<T>::from_host(h);
    CHECK(d.size() == 1001);
    CHECK(d.device() >= 0);
    CHECK((d.to_host().array() == h.array()).all());
    DeviceVector<T> copy = d;  // deep
    copy.setZero();
    CHECK((d.to_host().array() == h.array()).all());
    CHECK((copy.to_host().array() == T(0)).all());
    copy = std::as_const(d).segment(10, 5);  // assignment from a view resizes
    CHECK(copy.size() == 5);
    CHECK((copy.to_host().array() == h.segment(10, 5).array()).all());
    DeviceVector<T> self = d;
    self = std::as_const(self).segment(1, 3);  // from a part of itself
    CHECK((self.to_host().array() == h.segment(1, 3).array()).all());
    // host side through an Eigen::Map over plain memory
    std::vector<T> raw(5);
    Eigen::Map<Vector<T>> map(raw.data(), 5);
    copy.copy_to_host(map);
    CHECK(raw[4] == h[14]);
    map.setConstant(T(2.5));
    copy.copy_from_host(map);
    CHECK((copy.to_host().array() == T(2.5)).all());
    CHECK_THROWS_WITH_AS(copy.copy_from_host(h),
                         "slowmo::cuda::DeviceVector::copy_from_host: host vector size 1001 does not match device "
                         "vector size 5",
                         size_mismatch);
    DeviceVector<T> z = DeviceVector<T>::Zero(7);
    CHECK((z.to_host().array() == T(0)).all());
    z.setZero(3);
    CHECK(z.size() == 3);
  }

  TEST_CASE("allocation failure and host pointers give clear errors") {
    try {
      DeviceVector<float> huge(Eigen::Index(1) << 50);
      FAIL("allocated 4 PiB");
    } catch (const cuda::cuda_error& e) {
      CHECK(e.code() == cudaErrorMemoryAllocation);
      CHECK(std::string(e.what()).starts_with("slowmo::cuda: cudaMalloc of 4503599627370496 bytes (1125899906842624 float)"));
    }
    std::vector<float> host(4);
    CHECK_THROWS_AS(cuda::device_span(host.data(), 4), std::invalid_argument);
    DeviceVector<float> d(4);
    CHECK(cuda::device_span(d.data(), 4).size() == 4);
  }

  TEST_CASE_TEMPLATE("parity: every optimizer's trajectory and state on the device equal the CPU's", T, float,
                     double) {
    for (Config c : parity::all_configs) {
      for (Eigen::Index n : {Eigen::Index(1), Eigen::Index(3), Eigen::Index(1000), Eigen::Index(4099),
                             Eigen::Index((1 << 16) + 5)})
        check_parity<T>(c, n, 0);
      check_parity<T>(c, 1001, 1);  // unaligned: every element through the kernel's scalar path
    }
  }

  TEST_CASE("state on the device: reset zeroes accumulators, copies are deep") {
    const parity::Problem<float> p(257);
    DeviceVector<float> x = DeviceVector<float>::from_host(p.x0), g = DeviceVector<float>::from_host(p.c);
    cuda::Adam<float> adam({.lr = 0.01, .amsgrad = true});
    for (int t = 0; t < 3; ++t) adam.step(x, g);
    const cuda::Adam<float> copy = adam;
    reset_state(adam);
    CHECK((adam.exp_avg().to_host().array() == 0.0f).all());
    CHECK((adam.max_exp_avg_sq().to_host().array() == 0.0f).all());
    CHECK(parity::state_of(adam)["adam_steps"][0] == 0);
    CHECK(parity::state_of(adam)["steps"][0] == 3);  // progress is kept
    CHECK((copy.exp_avg().to_host().array() != 0.0f).any());
    CHECK(copy.exp_avg().data() != adam.exp_avg().data());
  }

  TEST_CASE("a step is one kernel on the current stream and never waits for the device") {
    // Stream capture fails on any synchronisation or copy to host memory; the captured graph
    // shows what one step queues. NonFinite::propagate: the scan of raise and skip reads its
    // reduction back (see the next test).
    cuda::Stream stream;
    const cuda::StreamGuard on(stream);
    const parity::Problem<float> p(4099);
    DeviceVector<float> x = DeviceVector<float>::from_host(p.x0), g = DeviceVector<float>::from_host(p.c);
    auto kernels_in = [&](auto& opt, int steps) {
      slowmo::start(opt, x);
      opt.step(x, g);  // the first step allocates the state (not capturable): outside
      cudaGraph_t graph = nullptr;
      cuda::check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed), "cudaStreamBeginCapture");
      for (int t = 0; t < steps; ++t) opt.step(x, g);
      cuda::check(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture");
      std::size_t n = 0;
      cuda::check(cudaGraphGetNodes(graph, nullptr, &n), "cudaGraphGetNodes");
      std::vector<cudaGraphNode_t> nodes(n);
      cuda::check(cudaGraphGetNodes(graph, nodes.data(), &n), "cudaGraphGetNodes");
      int kernels = 0;
      for (auto node : nodes) {
        cudaGraphNodeType type{};
        cuda::check(cudaGraphNodeGetType(node, &type), "cudaGraphNodeGetType");
        kernels += type == cudaGraphNodeTypeKernel;
      }
      cuda::check(cudaGraphDestroy(graph), "cudaGraphDestroy");
      return kernels;
    };
    constexpr NonFinite nf = NonFinite::propagate;
    cuda::Adam<float> adam({.non_finite = nf});
    CHECK(kernels_in(adam, 5) == 5);
    cuda::AdamW<float> adamw({.amsgrad = true, .non_finite = nf});
    CHECK(kernels_in(adamw, 5) == 5);
    cuda::Nesterov<float> nesterov({.lr = 0.1, .non_finite = nf});
    CHECK(kernels_in(nesterov, 5) == 5);
    Lookahead lookahead(cuda::Sgd<float>({.lr = 0.1, .non_finite = nf}), {.k = 2});
    CHECK(kernels_in(lookahead, 4) == 4 + 2);  // steps 2..5: syncs after steps 2 and 4
    FedProx prox(cuda::Sgd<float>({.lr = 0.1, .non_finite = nf}), {.mu = 0.1});
    CHECK(kernels_in(prox, 5) == 5 + 5);  // the proximal gradient, then the step
    auto outer = lookahead_as_slowmo(cuda::Sgd<float>({.lr = 0.1, .non_finite = nf}), 3, 0.5);
    CHECK(kernels_in(outer, 6) == 6 + 2);  // steps 2..7: outer updates after steps 3 and 6
  }

  TEST_CASE_TEMPLATE("reductions on the device: the scan, the norms and clipping agree with the host", T, float,
                     double) {
    using namespace slowmo::reductions;
    for (Eigen::Index n : {Eigen::Index(1), Eigen::Index(255), Eigen::Index(4099), Eigen::Index(1 << 20) + 3}) {
      CAPTURE(n);
      const Vector<T> h = Vector<T>::LinSpaced(n, T(-3), T(2));
      const DeviceVector<T> d = DeviceVector<T>::from_host(h);
      CHECK(cuda::Device::reduce(n, NonFiniteProbe<T>{}, d.data()) == T(0));
      CHECK(cuda::Device::reduce(n, MaxAbs<T>{}, d.data()) == T(3));
      // A sum in another order: equal within a few ulps of the sum of |terms|.
      const T host = Host::reduce(n, SumOfSquares<T>{}, h.data()), dev = cuda::Device::reduce(n, SumOfSquares<T>{}, d.data());
      CHECK(double(std::abs(host - dev)) <= 8 * double(n) * std::numeric_limits<T>::epsilon() * double(host));
      CHECK(dev == cuda::Device::reduce(n, SumOfSquares<T>{}, d.data()));  // deterministic
      for (Eigen::Index bad : {Eigen::Index(0), n / 2, n - 1}) {
        Vector<T> b = h;
        b[bad] = bad % 2 ? std::numeric_limits<T>::infinity() : std::numeric_limits<T>::quiet_NaN();
        const DeviceVector<T> db = DeviceVector<T>::from_host(b);
        CHECK(std::isnan(cuda::Device::reduce(n, NonFiniteProbe<T>{}, db.data())));
        const auto [index, value] = slowmo::detail::first_non_finite_in<cuda::Device>(db.data(), n);
        CHECK(index == bad);
        CHECK(std::isnan(value) == std::isnan(b[bad]));
        // raise names the same index and value as on the host; skip leaves x alone
        DeviceVector<T> x = DeviceVector<T>::Zero(n);
        cuda::Sgd<T> raising({.lr = 0.1});
        const std::string want = "gradient[" + std::to_string(bad) + "] = ";
        CHECK_THROWS_WITH_AS(raising.step(x, db), doctest::Contains(want.c_str()), non_finite_error);
        cuda::Sgd<T> skipping({.lr = 0.1, .non_finite = NonFinite::skip});
        skipping.step(x, db);
        CHECK(skipping.steps() == 1);
        CHECK((x.to_host().array() == T(0)).all());
      }
    }
    // Clipping by norm on the device: (3, 0, 4) * 1000 clipped to 1 with Sgd lr 1.
    DeviceVector<T> x = DeviceVector<T>::Zero(3);
    Vector<T> hg(3);
    hg << T(3000), T(0), T(4000);
    const DeviceVector<T> g = DeviceVector<T>::from_host(hg);
    ClipGradNorm clip(cuda::Sgd<T>({.lr = 1.0}), {.max_norm = 1.0});
    clip.step(x, g);
    const T coef = T(1) / (T(5000) + T(1e-6));
    CHECK(x.to_host()[0] == -(T(3000) * coef));
    CHECK(x.to_host()[2] == -(T(4000) * coef));
  }
}
