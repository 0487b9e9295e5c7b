// Fault injection on the simulator: an injected failure names its worker; a straggler and
// a worker whose messages are delayed change virtual time only, never the results of
// synchronous algorithms.
#include <doctest/doctest.h>

#include <slowmo/problems/quadratic.hpp>
#include <slowmo/slowmo.hpp>

namespace {

using slowmo::Vector;
const slowmo::problems::Quadratic problem({.workers = 4, .dim = 5, .heterogeneity = 1.0, .noise = 0.2, .seed = 2});

struct Outcome {
  std::vector<Vector<double>> x;
  slowmo::sim::Report report;
};

template <class Make>
Outcome train(const slowmo::sim::Options& options, Make make) {
  Outcome out{std::vector<Vector<double>>(4), {}};
  out.report = slowmo::sim::run(options, [&](slowmo::sim::Comm& c) {
    auto opt = make(c);
    Vector<double> x = Vector<double>::Zero(5), g(5);
    opt.start(x);
    for (int t = 0; t < 24; ++t) {
      problem.sample_gradient(c.rank(), t, x, g);
      c.compute(1e-3);
      opt.step(x, g);
    }
    out.x[std::size_t(c.rank())] = x;
  });
  return out;
}

}  // namespace

TEST_CASE("straggler (10x slower compute) and delayed messages: same results, later finish") {
  using namespace slowmo;
  auto algorithms = [](auto check) {
    check([](sim::Comm& c) { return SlowMo(Nesterov<double>({.lr = 0.1}), c, {.tau = 6, .beta = 0.5}); });
    check([](sim::Comm& c) { return LocalSgd(Sgd<double>({.lr = 0.1}), c, {.H = 4}); });
    check([](sim::Comm& c) { return GradientAllReduce(Adam<double>({.lr = 0.05}), c); });
    check([](sim::Comm& c) { return Sgp(Sgd<double>({.lr = 0.1}), c); });
  };
  algorithms([](auto make) {
    const sim::Options base{.workers = 4};
    const auto normal = train(base, make);
    auto slow = base;
    slow.slowdown = {1, 1, 10, 1};
    const auto straggler = train(slow, make);
    auto late = base;
    late.message_delay = {0, 0.05, 0, 0};
    const auto delayed = train(late, make);
    CHECK(straggler.x == normal.x);
    CHECK(delayed.x == normal.x);
    // worker 2 computes 24 x 10 ms itself; everyone who waits on it finishes later too
    CHECK(straggler.report.workers[2].time >= 0.24);
    CHECK(straggler.report.makespan() > normal.report.makespan() + 0.2);
    CHECK(delayed.report.makespan() > normal.report.makespan() + 0.04);
  });
}

TEST_CASE("an injected failure surfaces from run() naming the worker; the others are released") {
  using namespace slowmo;
  sim::Options options{.workers = 4};
  options.fail_at_call = {0, 0, 5, 0};
  try {
    train(options, [](sim::Comm& c) { return SlowMo(Sgd<double>({.lr = 0.1}), c, {.tau = 2}); });
    FAIL("no error");
  } catch (const worker_error& e) {
    CHECK(e.rank() == 2);
    CHECK(std::string(e.what()).find("injected fault: worker 2 fails at its communication call 5") !=
          std::string::npos);
    CHECK_THROWS_AS(std::rethrow_if_nested(e), sim::injected_fault);
  }
  options.fail_at_call = {0, 3};
  CHECK_THROWS_WITH_AS(train(options, [](sim::Comm& c) { return LocalSgd(Sgd<double>({.lr = 0.1}), c); }),
                       doctest::Contains("'fail_at_call.size()' = 2"), invalid_option);
}
