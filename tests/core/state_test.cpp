// State visiting: every optimizer enumerates its buffers and counters, with kinds and
// nested names, and reset_state re-initialises exactly what a fresh optimizer would.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include <slowmo/optim/adam.hpp>
#include <slowmo/optim/lookahead.hpp>
#include <slowmo/optim/sgd.hpp>

namespace {

using slowmo::StateKind;
using slowmo::Vector;

struct Entry {
  std::string path;
  StateKind kind;
  Eigen::Index size;  // -1 for counters
};

template <class Opt>
std::vector<Entry> entries(const Opt& opt) {
  std::vector<Entry> out;
  opt.visit_state([&](const slowmo::StateKey& key, const auto& ref, StateKind kind) {
    if constexpr (std::is_arithmetic_v<std::remove_cvref_t<decltype(ref)>>)
      out.push_back({key.path(), kind, -1});
    else
      out.push_back({key.path(), kind, ref.size()});
  });
  return out;
}

}  // namespace

TEST_CASE("Sgd and Adam list their state with kinds") {
  slowmo::Sgd<float> sgd({.lr = 0.1, .momentum = 0.9});
  Vector<float> x = Vector<float>::Ones(6);
  sgd.step(x, x);
  const auto e = entries(sgd);
  REQUIRE(e.size() == 3);
  CHECK(e[0].path == "momentum_buffer");
  CHECK(e[0].kind == StateKind::accumulator);
  CHECK(e[0].size == 6);
  CHECK(e[1].path == "momentum_steps");
  CHECK(e[1].kind == StateKind::counter);
  CHECK(e[2].path == "steps");
  CHECK(e[2].kind == StateKind::progress);

  slowmo::Adam<double> adam({.amsgrad = true});
  const auto a = entries(adam);
  REQUIRE(a.size() == 5);
  CHECK(a[0].path == "exp_avg");
  CHECK(a[0].size == 0);  // state exists from the first step on
  CHECK(a[2].path == "max_exp_avg_sq");
  CHECK(a[3].path == "adam_steps");

  // A buffer the options rule out is not state at all: never visited, never checkpointed.
  CHECK(entries(slowmo::Adam<double>({.amsgrad = false})).size() == 4);
  const auto plain = entries(slowmo::Sgd<float>({.lr = 0.1}));
  REQUIRE(plain.size() == 1);
  CHECK(plain[0].path == "steps");
}

TEST_CASE("Lookahead lists its own state, then its base's under base/") {
  slowmo::Lookahead la(slowmo::Adam<float>({.lr = 0.1}), {.k = 2});
  Vector<float> x = Vector<float>::Ones(3);
  la.step(x, Vector<float>(x));
  const auto e = entries(la);
  REQUIRE(e.size() == 6);  // Adam without amsgrad has no max_exp_avg_sq
  CHECK(e[0].path == "slow_weights");
  CHECK(e[0].kind == StateKind::anchor);
  CHECK(e[0].size == 3);
  CHECK(e[1].path == "steps");
  CHECK(e[2].path == "base/exp_avg");
  CHECK(e[2].size == 3);
  CHECK(e[4].path == "base/adam_steps");
  CHECK(e[5].path == "base/steps");
}

TEST_CASE("reset_state makes the optimizer continue exactly as a fresh one, schedule position kept") {
  slowmo::Adam<double, slowmo::schedule::StepDecay> used({.lr = 0.1}, {.step_size = 3, .gamma = 0.5});
  Vector<double> x = Vector<double>::LinSpaced(5, -1, 1);
  for (int t = 0; t < 4; ++t) used.step(x, Vector<double>(2 * x));
  slowmo::reset_state(used);
  CHECK(used.exp_avg().isZero(0.0));
  CHECK(used.exp_avg_sq().isZero(0.0));
  CHECK(used.steps() == 4);  // progress survives: the schedule continues at lr 0.05

  // A fresh Adam with the lr the schedule gives at steps 4 and 5 (0.05) takes the same steps.
  slowmo::Adam<double> fresh({.lr = 0.05});
  Vector<double> y = x;
  for (int t = 0; t < 2; ++t) {
    used.step(x, Vector<double>(2 * x));
    fresh.step(y, Vector<double>(2 * y));
  }
  CHECK(x == y);
  CHECK(used.last_lr() == 0.05);
}
