// Memory spaces (core/space.hpp) without a GPU: a "mirror" space keeps buffers in host
// memory behind types that offer only what a space must offer (the interface the CUDA
// device vector implements), and counts the passes its for_each makes. Every optimizer and
// combinator must then (1) compile against that minimal interface, (2) give bit for bit
// the results of the Host space, since both apply the same rules to the same numbers, and
// (3) make one pass over memory per update.
#include <doctest/doctest.h>

#include <cmath>
#include <span>
#include <string>
#include <vector>

#include <slowmo/slowmo.hpp>

namespace mirror {

inline int passes = 0;      // for_each calls since the last reset
inline int reductions = 0;  // reduce calls since the last reset

template <class T>
class Buffer;

/// A view: size and data, nothing else (no Eigen expressions).
template <class T>
class Span {
 public:
  Span(T* p, Eigen::Index n) : p_(p), n_(n) {}
  Span(Buffer<std::remove_const_t<T>>& b) : Span(b.data(), b.size()) {}  // NOLINT: implicit, like Ref
  Span(const Buffer<std::remove_const_t<T>>& b)
    requires std::is_const_v<T>
      : Span(b.data(), b.size()) {}
  template <class U>
    requires(std::is_const_v<T> && std::is_same_v<U, std::remove_const_t<T>>)
  Span(Span<U> s) : Span(s.data(), s.size()) {}
  T* data() const { return p_; }
  Eigen::Index size() const { return n_; }

 private:
  T* p_;
  Eigen::Index n_;
};

/// An owning buffer with exactly the members core/space.hpp lists.
template <class T>
class Buffer {
 public:
  Eigen::Index size() const { return Eigen::Index(v_.size()); }
  T* data() { return v_.data(); }
  const T* data() const { return v_.data(); }
  void resize(Eigen::Index n) { v_.resize(std::size_t(n), T(-12345)); }  // garbage, as a fresh allocation
  void setZero() { std::fill(v_.begin(), v_.end(), T(0)); }
  void setZero(Eigen::Index n) {
    resize(n);
    setZero();
  }
  Buffer& operator=(Span<const T> s) {
    v_.assign(s.data(), s.data() + s.size());
    return *this;
  }

 private:
  std::vector<T> v_;
};

template <class T>
std::span<T> as_span(Buffer<T>& b) {
  return {b.data(), std::size_t(b.size())};
}
template <class T>
std::span<const T> as_span(const Buffer<T>& b) {
  return {b.data(), std::size_t(b.size())};
}
template <class T>
std::span<T> as_span(Span<T> s) {
  return {s.data(), std::size_t(s.size())};
}

struct Space {
  template <class T>
  using vector = Buffer<T>;
  template <class T>
  using ref = Span<T>;
  template <class T>
  using const_ref = Span<const T>;
  template <class Comm>
  static constexpr bool communicates_with = true;
  static constexpr const char* name = "mirror";

  template <class Rule, class... Q>
  static void for_each(Eigen::Index n, const Rule& rule, Q*... ptrs) {
    ++passes;
    slowmo::detail::for_each_element(n, rule, ptrs...);
  }
  template <class Op, class T>
  static T reduce(Eigen::Index n, const Op& op, const T* p) {
    ++reductions;
    return slowmo::detail::reduce_elements(n, op, p);
  }
};

template <class T>
Buffer<T> from(const slowmo::Vector<T>& v) {
  Buffer<T> b;
  b = Span<const T>(v.data(), v.size());
  return b;
}
template <class T>
slowmo::Vector<T> to_eigen(const Buffer<T>& b) {
  return Eigen::Map<const slowmo::Vector<T>>(b.data(), b.size());
}

}  // namespace mirror

using namespace slowmo;
using Const = schedule::Constant;
using M = mirror::Space;

static_assert(MemorySpace<M>);
static_assert(std::same_as<space_of_t<Sgd<float>>, Host> && std::same_as<space_of_t<Adam<double>>, Host>);
static_assert(std::same_as<space_of_t<Lookahead<Adam<float, Const, M>>>, M>);
static_assert(Optimizer<Sgd<float, Const, M>> && Optimizer<Nesterov<double, Const, M>>);
static_assert(Optimizer<Adam<float, Const, M>> && Optimizer<AdamW<double, Const, M>>);
static_assert(Optimizer<Lookahead<AdamW<float, Const, M>>>);
static_assert(Optimizer<SlowMo<Adam<float, Const, M>, sim::Comm>>);
static_assert(Optimizer<SlowMo<LocalSgd<Sgd<float, Const, M>, sim::Comm>, sim::Comm>>);
static_assert(Optimizer<GradientAllReduce<Adam<double, Const, M>, threads::Comm>>);
static_assert(Optimizer<Sgp<Nesterov<float, Const, M>, sim::Comm>>);
// A user-written optimizer without space_type is a host optimizer.
struct Plain {
  using scalar_type = float;
  void step(VectorRef<float>, ConstVectorRef<float>) {}
  float last_lr() const { return 0; }
  std::int64_t steps() const { return 0; }
  template <class V>
  void visit_state(V&&, const StateScope* = nullptr) const {}
};
static_assert(std::same_as<space_of_t<Plain>, Host> && Optimizer<Plain>);
// A mirror-space optimizer does not accept Eigen vectors, and a host one not mirror buffers.
template <class O, class X>
concept StepsOn = requires(O& o, X& x) { o.step(x, x); };
static_assert(StepsOn<Sgd<float, Const, M>, mirror::Buffer<float>> && StepsOn<Sgd<float>, Vector<float>>);
static_assert(!StepsOn<Sgd<float, Const, M>, Vector<float>>);
static_assert(!StepsOn<Sgd<float>, mirror::Buffer<float>>);

namespace {

// Worker r's gradient of 1/2 sum_j a_rj (x_j - c_rj)^2.
template <class T>
Vector<T> gradient(int r, const Vector<T>& x) {
  Vector<T> g(x.size());
  for (Eigen::Index j = 0; j < x.size(); ++j)
    g[j] = T((0.5 + 0.25 * double((r + j) % 3)) * (double(x[j]) - std::sin(double(3 * r + j))));
  return g;
}

template <class T>
Vector<T> start(int r, Eigen::Index d) {
  Vector<T> x = Vector<T>::LinSpaced(d, T(-1), T(1));
  return x * T(1 + r);
}

/// Trains with a host optimizer and with the same optimizer in the mirror space (built by
/// the same factory), on every worker, and returns the largest difference and the passes
/// per step seen by the mirror.
template <class T, class MakeHost, class MakeMirror>
void same_in_both_spaces(const char* what, int workers, MakeHost make_host, MakeMirror make_mirror, int steps = 30,
                         Eigen::Index d = 37) {
  CAPTURE(what);
  std::vector<Vector<T>> host(static_cast<std::size_t>(workers)), mirrored(static_cast<std::size_t>(workers));
  sim::run({.workers = workers}, [&](sim::Comm& comm) {
    auto opt = make_host(comm);
    Vector<T> x = start<T>(comm.rank(), d);
    slowmo::start(opt, x);
    for (int t = 0; t < steps; ++t) opt.step(x, gradient(comm.rank(), x));
    host[std::size_t(comm.rank())] = x;
  });
  sim::run({.workers = workers}, [&](sim::Comm& comm) {
    auto opt = make_mirror(comm);
    mirror::Buffer<T> x = mirror::from<T>(start<T>(comm.rank(), d));
    slowmo::start(opt, x);
    for (int t = 0; t < steps; ++t) {
      const mirror::Buffer<T> g = mirror::from<T>(gradient(comm.rank(), mirror::to_eigen(x)));
      opt.step(x, g);
    }
    mirrored[std::size_t(comm.rank())] = mirror::to_eigen(x);
  });
  for (int r = 0; r < workers; ++r) {
    CAPTURE(r);
    CHECK((host[std::size_t(r)].array() == mirrored[std::size_t(r)].array()).all());
  }
}

}  // namespace

TEST_CASE_TEMPLATE("every optimizer and combinator gives the same numbers in the mirror space as on the host", T, float,
                   double) {
  same_in_both_spaces<T>(
      "sgd", 1, [](auto&) { return Sgd<T>({.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .weight_decay = 0.01}); },
      [](auto&) { return Sgd<T, Const, M>({.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .weight_decay = 0.01}); });
  same_in_both_spaces<T>(
      "nesterov, step decay", 1,
      [](auto&) { return Nesterov<T, schedule::StepDecay>({.lr = 0.1}, {.step_size = 7, .gamma = 0.5}); },
      [](auto&) { return Nesterov<T, schedule::StepDecay, M>({.lr = 0.1}, {.step_size = 7, .gamma = 0.5}); });
  same_in_both_spaces<T>(
      "adamw amsgrad", 1, [](auto&) { return AdamW<T>({.lr = 0.05, .amsgrad = true}); },
      [](auto&) { return AdamW<T, Const, M>({.lr = 0.05, .amsgrad = true}); });
  same_in_both_spaces<T>(
      "lookahead(adam), reset", 1,
      [](auto&) { return Lookahead(Adam<T>({.lr = 0.05}), {.k = 4, .alpha = 0.5, .base_state = OnSync::reset}); },
      [](auto&) {
        return Lookahead(Adam<T, Const, M>({.lr = 0.05}), {.k = 4, .alpha = 0.5, .base_state = OnSync::reset});
      });
  same_in_both_spaces<T>(
      "slowmo(nesterov)", 4, [](auto& c) { return SlowMo(Nesterov<T>({.lr = 0.1}), c, {.tau = 6, .beta = 0.6}); },
      [](auto& c) { return SlowMo(Nesterov<T, Const, M>({.lr = 0.1}), c, {.tau = 6, .beta = 0.6}); });
  same_in_both_spaces<T>(
      "slowmo(adam), average", 3,
      [](auto& c) { return SlowMo(Adam<T>({.lr = 0.05}), c, {.tau = 5, .base_state = OnSync::average}); },
      [](auto& c) { return SlowMo(Adam<T, Const, M>({.lr = 0.05}), c, {.tau = 5, .base_state = OnSync::average}); });
  same_in_both_spaces<T>(
      "post-local sgd", 4,
      [](auto& c) { return LocalSgd(Sgd<T>({.lr = 0.1, .momentum = 0.5}), c, {.H = 3, .warmup_steps = 5}); },
      [](auto& c) { return LocalSgd(Sgd<T, Const, M>({.lr = 0.1, .momentum = 0.5}), c, {.H = 3, .warmup_steps = 5}); });
  same_in_both_spaces<T>(
      "gradient all-reduce(adam)", 3, [](auto& c) { return GradientAllReduce(Adam<T>({.lr = 0.05}), c); },
      [](auto& c) { return GradientAllReduce(Adam<T, Const, M>({.lr = 0.05}), c); });
  same_in_both_spaces<T>(
      "slowmo(sgp, ring with 2 peers)", 5,
      [](auto& c) { return SlowMo(Sgp(Sgd<T>({.lr = 0.1}), c, Ring(c.size(), 2)), c, {.tau = 4, .beta = 0.5}); },
      [](auto& c) {
        return SlowMo(Sgp(Sgd<T, Const, M>({.lr = 0.1}), c, Ring(c.size(), 2)), c, {.tau = 4, .beta = 0.5});
      });
  same_in_both_spaces<T>(
      "outer loop, FedYogi over Adam, reset", 3,
      [](auto& c) {
        return outer_loop(Adam<T>({.lr = 0.05}), c, {.tau = 4, .base_state = OnSync::reset},
                          outer::FedYogi<T>({.lr = 0.05}));
      },
      [](auto& c) {
        return outer_loop(Adam<T, Const, M>({.lr = 0.05}), c, {.tau = 4, .base_state = OnSync::reset},
                          outer::FedYogi<T, M>({.lr = 0.05}));
      });
  same_in_both_spaces<T>(
      "outer loop, FedAdam on d / gamma", 2,
      [](auto& c) { return outer_loop(Sgd<T>({.lr = 0.1}), c, {.tau = 3, .divide_by_lr = true}, outer::FedAdam<T>()); },
      [](auto& c) {
        return outer_loop(Sgd<T, Const, M>({.lr = 0.1}), c, {.tau = 3, .divide_by_lr = true}, outer::FedAdam<T, M>());
      });
  same_in_both_spaces<T>(
      "clip by norm (adamw), clip by value (sgd)", 1,
      [](auto&) { return ClipGradValue(ClipGradNorm(AdamW<T>({.lr = 0.05}), {.max_norm = 2.0}), {.threshold = 0.4}); },
      [](auto&) {
        return ClipGradValue(ClipGradNorm(AdamW<T, Const, M>({.lr = 0.05}), {.max_norm = 2.0}), {.threshold = 0.4});
      });
  same_in_both_spaces<T>(
      "local sgd(fedprox(sgd)), clipped by the inf-norm", 3,
      [](auto& c) {
        return LocalSgd(ClipGradNorm(FedProx(Sgd<T>({.lr = 0.1}), {.mu = 0.3}), {.max_norm = 1.0, .norm_type = INFINITY}),
                        c, {.H = 4});
      },
      [](auto& c) {
        return LocalSgd(
            ClipGradNorm(FedProx(Sgd<T, Const, M>({.lr = 0.1}), {.mu = 0.3}), {.max_norm = 1.0, .norm_type = INFINITY}),
            c, {.H = 4});
      });
  same_in_both_spaces<T>(
      "diloco", 2, [](auto& c) { return diloco<T>(c, {.H = 5, .inner_lr = 0.05}); },
      [](auto& c) { return diloco<T, M>(c, {.H = 5, .inner_lr = 0.05}); });
}

TEST_CASE("each update is one pass over memory: one for_each per step, one per outer step") {
  const Vector<float> g0 = Vector<float>::Constant(11, 0.5f);
  mirror::Buffer<float> x = mirror::from<float>(Vector<float>::Zero(11)), g = mirror::from(g0);
  auto passes_of = [&](auto&& opt, int steps) {
    slowmo::start(opt, x);  // (anchors without a pass: a copy)
    mirror::passes = 0;
    for (int t = 0; t < steps; ++t) opt.step(x, g);
    return mirror::passes;
  };
  CHECK(passes_of(Sgd<float, Const, M>({.lr = 0.1}), 5) == 5);
  CHECK(passes_of(Nesterov<float, Const, M>({.lr = 0.1}), 5) == 5);
  CHECK(passes_of(Adam<float, Const, M>({.amsgrad = true}), 5) == 5);
  CHECK(passes_of(AdamW<float, Const, M>(), 5) == 5);
  // Lookahead k = 2: 4 base steps and 2 syncs.
  CHECK(passes_of(Lookahead(Sgd<float, Const, M>({.lr = 0.1}), {.k = 2}), 4) == 4 + 2);
  // SlowMo tau = 3 on one worker: 6 base steps and 2 outer updates.
  CHECK(passes_of(lookahead_as_slowmo(Sgd<float, Const, M>({.lr = 0.1}), 3, 0.5), 6) == 6 + 2);
  // The outer loop with an adaptive rule: the pseudo-gradient and FedAdam in the same pass.
  SingleWorker solo;
  CHECK(passes_of(outer_loop(Sgd<float, Const, M>({.lr = 0.1}), solo, {.tau = 3}, outer::FedAdam<float, M>()), 6) ==
        6 + 2);
}

TEST_CASE("in a space of its own, NonFinite::raise and skip scan with the space's reduction") {
  const Vector<float> g0 = Vector<float>::Constant(11, 0.5f);
  mirror::Buffer<float> x = mirror::from<float>(Vector<float>::Zero(11)), g = mirror::from(g0);
  auto reductions_of = [&](auto&& opt, int steps) {
    mirror::reductions = 0;
    for (int t = 0; t < steps; ++t) opt.step(x, g);
    return mirror::reductions;
  };
  CHECK(reductions_of(Adam<float, Const, M>(), 4) == 4);  // raise: one scan per step
  CHECK(reductions_of(Sgd<float, Const, M>({.non_finite = NonFinite::skip}), 4) == 4);
  CHECK(reductions_of(Sgd<float, Const, M>({.non_finite = NonFinite::propagate}), 4) == 0);
  // clipping by the 2-norm: its sum of squares, then the base's scan
  CHECK(reductions_of(ClipGradNorm(Sgd<float, Const, M>({.non_finite = NonFinite::propagate})), 4) == 4);

  // The first bad index and its value, found by bisection: the host's message, word for word.
  for (Eigen::Index bad : {0, 5, 10}) {
    CAPTURE(bad);
    Vector<float> h = g0;
    h[bad] = bad == 5 ? -INFINITY : NAN;
    const mirror::Buffer<float> hb = mirror::from(h);
    Adam<float, Const, M> mirrored;
    Adam<float> host;
    Vector<float> xh = Vector<float>::Zero(11);
    std::string host_message, mirror_message;
    try {
      host.step(xh, h);
    } catch (const non_finite_error& e) {
      host_message = e.what();
    }
    try {
      mirrored.step(x, hb);
    } catch (const non_finite_error& e) {
      mirror_message = e.what();
    }
    CHECK(host_message.find("gradient[" + std::to_string(bad) + "] = ") != std::string::npos);
    CHECK(mirror_message == host_message);
    CHECK(mirrored.steps() == 0);
    Sgd<float, Const, M> skipping({.lr = 0.1, .non_finite = NonFinite::skip});
    const Vector<float> before = mirror::to_eigen(x);
    skipping.step(x, hb);
    CHECK(skipping.steps() == 1);
    CHECK((mirror::to_eigen(x).array() == before.array()).all());
  }
}
