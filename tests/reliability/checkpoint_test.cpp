// Checkpoints: round trips, the strong guarantee on every kind of bad file, atomic saves.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include <slowmo/slowmo.hpp>

namespace {

using slowmo::Vector;
namespace fs = std::filesystem;

fs::path scratch_dir() {
  const fs::path d = fs::temp_directory_path() / ("slowmo_ckpt_test_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

template <class Opt>
void take_steps(Opt& opt, Vector<typename Opt::scalar_type>& x, int from, int to) {
  using T = typename Opt::scalar_type;
  Vector<T> g(x.size());
  for (int t = from; t < to; ++t) {
    for (Eigen::Index i = 0; i < x.size(); ++i) g[i] = T(std::sin(double(t * 7 + i)) + 0.5 * double(x[i]));
    opt.step(x, g);
  }
}

/// Save after `k` steps, load into a fresh optimizer, continue: bit-identical to going on.
template <class Opt>
void round_trip(const Opt& prototype, int k = 7, int more = 9) {
  using T = typename Opt::scalar_type;
  Opt a = prototype;
  Vector<T> x = Vector<T>::LinSpaced(11, T(-1), T(1));
  take_steps(a, x, 0, k);
  const fs::path file = scratch_dir() / "round_trip.ckpt";
  slowmo::save_checkpoint(a, file);
  Opt b = prototype;
  slowmo::load_checkpoint(b, file);
  CHECK(slowmo::checkpoint_bytes(b) == slowmo::checkpoint_bytes(a));
  Vector<T> y = x;
  take_steps(a, x, k, k + more);
  take_steps(b, y, k, k + more);
  CHECK(x == y);
  CHECK(a.steps() == b.steps());
}

}  // namespace

TEST_CASE_TEMPLATE("round trips: every single-worker optimizer and the combinators on one worker", T, float, double) {
  using namespace slowmo;
  round_trip(Sgd<T>({.lr = 0.1, .momentum = 0.9, .dampening = 0.1}));
  round_trip(Nesterov<T, schedule::StepDecay>({.lr = 0.1}, {.step_size = 3, .gamma = 0.5}));  // schedule position
  round_trip(Adam<T>({.lr = 0.05, .amsgrad = true}));
  round_trip(AdamW<T>({.lr = 0.05}));
  round_trip(Lookahead(Adam<T>({.lr = 0.05}), {.k = 3}), 4);  // stopped between syncs
  round_trip(Lookahead(Adam<T>({.lr = 0.05}), {.k = 3}), 6);  // stopped right after a sync
  static SingleWorker solo;
  round_trip(SlowMo(Nesterov<T>({.lr = 0.1}), solo, {.tau = 4, .beta = 0.5}), 6);
  round_trip(SlowMo(Lookahead(Sgd<T>({.lr = 0.1}), {.k = 2}), solo, {.tau = 4, .beta = 0.5}), 8);
  round_trip(LocalSgd(Sgd<T>({.lr = 0.1, .momentum = 0.5}), solo, {.H = 3, .warmup_steps = 2}), 5);
}

TEST_CASE("Lookahead keeps its slow weights across a checkpoint") {
  slowmo::Lookahead la(slowmo::Sgd<double>({.lr = 0.1}), {.k = 5, .alpha = 0.5});
  Vector<double> x = Vector<double>::Ones(3);
  take_steps(la, x, 0, 7);
  const Vector<double> slow = la.slow_weights();
  REQUIRE(slow != x);  // mid-cycle: the slow weights are not the fast ones
  slowmo::Lookahead fresh(slowmo::Sgd<double>({.lr = 0.1}), {.k = 5, .alpha = 0.5});
  slowmo::restore_checkpoint(fresh, slowmo::checkpoint_bytes(la));
  CHECK(fresh.slow_weights() == slow);
  CHECK(fresh.steps() == 7);
}

TEST_CASE("bad checkpoints throw checkpoint_error and leave the optimizer untouched") {
  using slowmo::checkpoint_error;
  slowmo::Adam<float> saved({.lr = 0.1});
  Vector<float> x = Vector<float>::Ones(6);
  take_steps(saved, x, 0, 3);
  const std::vector<unsigned char> good = slowmo::checkpoint_bytes(saved);

  slowmo::Adam<float> target({.lr = 0.1});
  Vector<float> y = Vector<float>::Ones(6);
  take_steps(target, y, 0, 5);  // some state of its own, same size
  const std::vector<unsigned char> before = slowmo::checkpoint_bytes(target);
  auto expect_error = [&](std::vector<unsigned char> bytes, const char* message) {
    CAPTURE(message);
    CHECK_THROWS_WITH_AS(slowmo::restore_checkpoint(target, bytes, "ck"), doctest::Contains(message),
                         checkpoint_error);
    CHECK(slowmo::checkpoint_bytes(target) == before);  // strong guarantee
  };
  expect_error({good.begin(), good.begin() + 20}, "truncated");
  expect_error({good.begin(), good.end() - 9}, "checksum mismatch");
  auto flipped = good;
  flipped[flipped.size() / 2] ^= 0x10;
  expect_error(flipped, "checksum mismatch");
  auto magic = good;
  magic[0] = 'X';
  expect_error(magic, "not a slowmo checkpoint");
  auto version = good;
  version[8] = 9;
  expect_error(version, "format version 9; this build reads version 1");
  expect_error({}, "truncated");

  // wrong scalar type, wrong composition, wrong size
  slowmo::Adam<double> other_type({.lr = 0.1});
  Vector<double> xd = Vector<double>::Ones(6);
  take_steps(other_type, xd, 0, 2);
  expect_error(slowmo::checkpoint_bytes(other_type), "written for double parameters; this optimizer uses float");
  slowmo::Sgd<float> other_algo({.lr = 0.1, .momentum = 0.5});
  take_steps(other_algo, y, 0, 2);
  expect_error(slowmo::checkpoint_bytes(other_algo), "different optimizer composition");
  slowmo::Adam<float> other_size({.lr = 0.1});
  Vector<float> x5 = Vector<float>::Ones(5);
  take_steps(other_size, x5, 0, 2);
  expect_error(slowmo::checkpoint_bytes(other_size), "entry 'exp_avg' has 5 elements; this optimizer's has 6");

  // A fresh optimizer accepts any size (its state does not exist yet).
  slowmo::Adam<float> fresh({.lr = 0.1});
  CHECK_NOTHROW(slowmo::restore_checkpoint(fresh, slowmo::checkpoint_bytes(other_size)));
  CHECK(fresh.exp_avg().size() == 5);
}

TEST_CASE("saving is atomic: a failed save leaves the previous checkpoint, no temporary remains") {
  const fs::path dir = scratch_dir();
  const fs::path file = dir / "atomic.ckpt";
  slowmo::Sgd<double> opt({.lr = 0.1, .momentum = 0.9});
  Vector<double> x = Vector<double>::Ones(4);
  take_steps(opt, x, 0, 2);
  slowmo::save_checkpoint(opt, file);
  take_steps(opt, x, 2, 4);
  slowmo::save_checkpoint(opt, file);  // replaces it
  slowmo::Sgd<double> back({.lr = 0.1, .momentum = 0.9});
  slowmo::load_checkpoint(back, file);
  CHECK(slowmo::checkpoint_bytes(back) == slowmo::checkpoint_bytes(opt));
  for (const auto& entry : fs::directory_iterator(dir))
    CHECK(entry.path().filename().string().find(".tmp.") == std::string::npos);
  // A save into a directory that does not exist fails cleanly.
  CHECK_THROWS_AS(slowmo::save_checkpoint(opt, dir / "missing" / "x.ckpt"), slowmo::checkpoint_error);
  CHECK_THROWS_WITH_AS(slowmo::load_checkpoint(back, dir / "none.ckpt"), doctest::Contains("cannot open"),
                       slowmo::checkpoint_error);
  fs::remove_all(dir);
}
