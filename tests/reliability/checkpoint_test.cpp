// Checkpoints: round trips, the strong guarantee on every kind of bad file (including files
// with a valid checksum but inconsistent contents), structural options, atomic saves.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <variant>
#include <vector>

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
  slowmo::start(a, x);  // (b is loaded, hence started)
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

// --- Crafted checkpoints: the format written out by hand, with a valid checksum -------------

std::uint64_t fnv1a64(const std::vector<unsigned char>& b) {  // FNV-1a, 64 bits (offset basis, prime)
  std::uint64_t h = 14695981039346656037ull;
  for (unsigned char c : b) h = (h ^ c) * 1099511628211ull;
  return h;
}

/// One entry: a buffer (float or double elements), a counter or a scalar.
using Entry = std::variant<std::vector<float>, std::vector<double>, std::int64_t, double>;

template <class T>
std::vector<T> filled(std::size_t n, T first = T(0.25)) {
  std::vector<T> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = first + T(i);
  return v;
}

/// A checkpoint file from its parts (format version 2): header, signature, entries, FNV-1a.
std::vector<unsigned char> craft(std::uint32_t scalar_size, const std::string& signature,
                                 const std::vector<Entry>& entries) {
  std::vector<unsigned char> b;
  auto raw = [&](const void* p, std::size_t n) {
    b.insert(b.end(), static_cast<const unsigned char*>(p), static_cast<const unsigned char*>(p) + n);
  };
  auto u32 = [&](std::uint32_t v) { raw(&v, 4); };
  auto u64 = [&](std::uint64_t v) { raw(&v, 8); };
  raw("SLOWMOCK", 8);
  u32(2);
  u32(0x01020304);
  u32(scalar_size);
  u64(signature.size());
  raw(signature.data(), signature.size());
  u64(entries.size());
  for (const Entry& e : entries) {
    if (const auto* vf = std::get_if<std::vector<float>>(&e)) {
      u64(vf->size());
      raw(vf->data(), vf->size() * sizeof(float));
    } else if (const auto* vd = std::get_if<std::vector<double>>(&e)) {
      u64(vd->size());
      raw(vd->data(), vd->size() * sizeof(double));
    } else if (const auto* c = std::get_if<std::int64_t>(&e)) {
      raw(c, 8);
    } else {
      raw(&std::get<double>(e), 8);
    }
  }
  u64(fnv1a64(b));
  return b;
}

/// Every visited entry's path and bytes (independent of the checkpoint writer).
template <class Opt>
std::vector<std::pair<std::string, std::vector<unsigned char>>> snapshot(const Opt& opt) {
  std::vector<std::pair<std::string, std::vector<unsigned char>>> out;
  opt.visit_state([&](const slowmo::StateKey& key, const auto& ref, slowmo::StateKind) {
    using R = std::remove_cvref_t<decltype(ref)>;
    std::vector<unsigned char> bytes;
    if constexpr (std::is_arithmetic_v<R>) {
      bytes.resize(sizeof(R));
      std::memcpy(bytes.data(), &ref, sizeof(R));
    } else {
      bytes.resize(std::size_t(ref.size()) * sizeof(*ref.data()));
      if (!bytes.empty()) std::memcpy(bytes.data(), ref.data(), bytes.size());
    }
    out.emplace_back(key.path(), std::move(bytes));
  });
  return out;
}

/// Loads `bytes` into `target`: the checkpoint_error's message ("(loaded)" if none was thrown),
/// after checking that a refused load left `target` bit-identical to what it was.
template <class Opt>
std::string rejection(Opt& target, const std::vector<unsigned char>& bytes) {
  const auto before = snapshot(target);
  try {
    slowmo::restore_checkpoint(target, bytes, "crafted.ckpt");
  } catch (const slowmo::checkpoint_error& e) {
    CHECK(snapshot(target) == before);  // the strong guarantee
    return e.what();
  }
  return "(loaded)";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

/// Saves `saved` after 3 steps (from a start) and loads it into `target`: the error message,
/// or "(loaded)".
template <class A, class B>
std::string load_into(A saved, B& target) {
  using T = typename A::scalar_type;
  Vector<T> x = Vector<T>::LinSpaced(4, T(-1), T(1));
  slowmo::start(saved, x);
  take_steps(saved, x, 0, 3);
  return rejection(target, slowmo::checkpoint_bytes(saved));
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
  expect_error(version, "format version 9; this build reads version 2");
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

TEST_CASE("the crafting helper writes exactly what save writes (so the crafted files below are well-formed)") {
  slowmo::Adam<float> adam({.lr = 0.1});
  Vector<float> x = Vector<float>::LinSpaced(5, -1.f, 1.f);
  take_steps(adam, x, 0, 3);
  const std::vector<float> m(adam.exp_avg().data(), adam.exp_avg().data() + 5);
  const std::vector<float> v(adam.exp_avg_sq().data(), adam.exp_avg_sq().data() + 5);
  CHECK(craft(4, slowmo::state_signature(adam), {m, v, std::int64_t(3), std::int64_t(3)}) ==
        slowmo::checkpoint_bytes(adam));
}

TEST_CASE("a valid checksum over inconsistent sizes is rejected, naming the entry; the optimizer is unchanged") {
  slowmo::Adam<float> fresh({.lr = 0.1});  // no state yet: accepts any one size
  const std::string adam_sig = slowmo::state_signature(fresh);
  const std::int64_t three = 3;

  // (a) exp_avg of 8, exp_avg_sq of 4: the next step would read 8 elements of a 4-element buffer
  std::string m = rejection(fresh, craft(4, adam_sig, {filled<float>(8), filled<float>(4), three, three}));
  CHECK(contains(m, "crafted.ckpt: entry 'exp_avg_sq' has 4 elements but 'exp_avg' of the same optimizer has 8"));
  // (b) exp_avg of 8 and exp_avg_sq empty
  m = rejection(fresh, craft(4, adam_sig, {filled<float>(8), filled<float>(0), three, three}));
  CHECK(contains(m, "crafted.ckpt: entry 'exp_avg_sq' has 0 elements but 'exp_avg' of the same optimizer has 8"));
  // amsgrad's third buffer too
  slowmo::Adam<float> ams({.lr = 0.1, .amsgrad = true});
  m = rejection(ams, craft(4, slowmo::state_signature(ams),
                           {filled<float>(8), filled<float>(8), filled<float>(2), three, three}));
  CHECK(contains(m, "entry 'max_exp_avg_sq' has 2 elements but 'exp_avg' of the same optimizer has 8"));
  // All empty (never stepped) is consistent, and so is all of one size.
  CHECK(rejection(fresh, craft(4, adam_sig, {filled<float>(0), filled<float>(0), std::int64_t(0), std::int64_t(0)})) ==
        "(loaded)");
  CHECK(rejection(fresh, craft(4, adam_sig, {filled<float>(8), filled<float>(8), three, three})) == "(loaded)");
  CHECK(fresh.exp_avg().size() == 8);

  // Across the nest: a Lookahead's slow weights of 6 and its Adam's moments of 5.
  slowmo::Lookahead la(slowmo::Adam<float>({.lr = 0.1}), {.k = 5});
  const std::string la_sig = slowmo::state_signature(la);
  m = rejection(la, craft(4, la_sig, {filled<float>(6), three, filled<float>(5), filled<float>(5), three, three}));
  CHECK(contains(m, "crafted.ckpt: entry 'base/exp_avg' has 5 elements but 'slow_weights' has 6"));
}

TEST_CASE("(c) a consistent checkpoint of another parameter size is rejected even where the target's entry is empty") {
  // After a skipped first step (NaN gradient), Lookahead holds slow weights of 6 while its Adam
  // has no state yet: comparing entry by entry would accept Adam moments of any size.
  slowmo::Lookahead la(slowmo::Adam<float>({.lr = 0.1, .non_finite = slowmo::NonFinite::skip}), {.k = 5});
  Vector<float> x = Vector<float>::Ones(6), g = Vector<float>::Constant(6, std::numeric_limits<float>::quiet_NaN());
  la.step(x, g);
  REQUIRE(la.slow_weights().size() == 6);
  REQUIRE(la.base().exp_avg().size() == 0);
  const std::string m = rejection(la, craft(4, slowmo::state_signature(la),
                                            {filled<float>(0), std::int64_t(0), filled<float>(5), filled<float>(5),
                                             std::int64_t(2), std::int64_t(2)}));
  CHECK(contains(m, "crafted.ckpt: entry 'base/exp_avg' has 5 elements; this optimizer's has 6"));
}

TEST_CASE("(d) negative or absurd counters and step counts are rejected, naming the entry") {
  slowmo::Adam<float> adam({.lr = 0.1});
  Vector<float> x = Vector<float>::Ones(4);
  take_steps(adam, x, 0, 2);  // has state: the strong guarantee is visible
  const std::string sig = slowmo::state_signature(adam);
  const auto v = filled<float>(4);
  CHECK(contains(rejection(adam, craft(4, sig, {v, v, std::int64_t(-1), std::int64_t(1)})),
                 "crafted.ckpt: entry 'adam_steps' is -1"));
  CHECK(contains(rejection(adam, craft(4, sig, {v, v, std::int64_t(1), std::int64_t(-5)})),
                 "crafted.ckpt: entry 'steps' is -5"));
  CHECK(contains(rejection(adam, craft(4, sig, {v, v, std::numeric_limits<std::int64_t>::max(), std::int64_t(1)})),
                 "entry 'adam_steps' is 9223372036854775807"));
  CHECK(rejection(adam, craft(4, sig, {v, v, std::int64_t(1) << 62, std::int64_t(1)})) == "(loaded)");
}

TEST_CASE("(e) a non-finite Sgp push-sum weight is rejected, naming the entry") {
  std::vector<std::string> messages(2 * 3);
  slowmo::sim::run({.workers = 2}, [&](slowmo::sim::Comm& c) {
    slowmo::Sgp sgp(slowmo::Sgd<double>({.lr = 0.1}), c);
    Vector<double> x = Vector<double>::Constant(3, double(c.rank()));
    slowmo::start(sgp, x);
    take_steps(sgp, x, 0, 2);
    const std::vector<double> num(sgp.numerator().data(), sgp.numerator().data() + 3);
    const std::string sig = slowmo::state_signature(sgp);
    auto with_weight = [&](double w) {
      return craft(8, sig, {num, w, std::int64_t(sgp.steps()), std::int64_t(sgp.base().steps())});
    };
    const std::size_t r = std::size_t(c.rank()) * 3;
    messages[r] = with_weight(sgp.weight()) == slowmo::checkpoint_bytes(sgp) ? "layout ok" : "layout differs";
    messages[r + 1] = rejection(sgp, with_weight(std::numeric_limits<double>::infinity()));
    messages[r + 2] = rejection(sgp, with_weight(std::numeric_limits<double>::quiet_NaN()));
  });
  for (int r = 0; r < 2; ++r) {
    CAPTURE(r);
    CHECK(messages[std::size_t(r) * 3] == "layout ok");
    CHECK(contains(messages[std::size_t(r) * 3 + 1], "crafted.ckpt: entry 'push_sum_weight' is inf"));
    CHECK(contains(messages[std::size_t(r) * 3 + 2], "crafted.ckpt: entry 'push_sum_weight' is "));
    CHECK(contains(messages[std::size_t(r) * 3 + 2], "must be finite"));
  }
}

TEST_CASE("structural options are part of the signature: a mismatch names the field and both values") {
  using namespace slowmo;
  auto differs = [](const std::string& m, const std::string& field, const std::string& theirs,
                    const std::string& ours) {
    CAPTURE(m);
    CHECK(contains(m, "crafted.ckpt: structural option '" + field + "' differs: the checkpoint has " + theirs +
                          ", this optimizer has " + ours));
  };
  {
    Adam<float> t({.amsgrad = true});
    differs(load_into(Adam<float>({.amsgrad = false}), t), "amsgrad", "false", "true");
    CHECK(t.max_exp_avg_sq().size() == 0);  // unchanged, not a half-loaded state
  }
  {
    Adam<float> t({.amsgrad = false});
    differs(load_into(Adam<float>({.amsgrad = true}), t), "amsgrad", "true", "false");
  }
  {
    Sgd<float> t({.lr = 0.1, .momentum = 0.9});
    differs(load_into(Sgd<float>({.lr = 0.1}), t), "momentum_enabled", "false", "true");
    Sgd<float> u({.lr = 0.1});
    differs(load_into(Sgd<float>({.lr = 0.1, .momentum = 0.9}), u), "momentum_enabled", "true", "false");
  }
  {
    Sgd<float> t({.lr = 0.1, .momentum = 0.9, .nesterov = true});
    differs(load_into(Sgd<float>({.lr = 0.1, .momentum = 0.9}), t), "nesterov", "false", "true");
    Sgd<float> u({.lr = 0.1, .momentum = 0.9});
    differs(load_into(Sgd<float>({.lr = 0.1, .momentum = 0.9, .nesterov = true}), u), "nesterov", "true", "false");
  }
  {
    Sgd<float, schedule::StepDecay> t({.lr = 0.1}, {.step_size = 3, .gamma = 0.5});
    const std::string m = load_into(Sgd<float>({.lr = 0.1}), t);
    CAPTURE(m);
    CHECK(contains(m, "structural option 'schedule' differs: the checkpoint has \"slowmo::schedule::Constant\""));
    CHECK(contains(m, "this optimizer has \"slowmo::schedule::StepDecay\""));
  }
  {
    AdamW<float> t({});
    differs(load_into(Adam<float>({}), t), "optimizer", "\"Adam\"", "\"AdamW\"");
    Adam<float> u({});
    differs(load_into(AdamW<float>({}), u), "optimizer", "\"AdamW\"", "\"Adam\"");
  }
  {  // a different composition is still said to be one
    Adam<float> t({});
    const std::string m = load_into(Sgd<float>({.lr = 0.1, .momentum = 0.5}), t);
    CHECK(contains(m, "crafted.ckpt: written by a different optimizer composition"));
  }
}

TEST_CASE("plain hyper-parameters (lr, betas, eps, weight_decay, dampening) may change on resume") {
  using namespace slowmo;
  Adam<float> t({.lr = 0.01, .betas = {0.8, 0.99}, .eps = 1e-6, .weight_decay = 0.1});
  Adam<float> saved({.lr = 0.1});
  CHECK(load_into(saved, t) == "(loaded)");
  Vector<float> x = Vector<float>::LinSpaced(4, -1.f, 1.f);
  take_steps(saved, x, 0, 3);  // the same three steps as load_into's
  CHECK(snapshot(t) == snapshot(saved));
  Sgd<double> s({.lr = 0.5, .momentum = 0.5, .dampening = 0.2});
  CHECK(load_into(Sgd<double>({.lr = 0.1, .momentum = 0.9}), s) == "(loaded)");
}

// The combinators' structural options (Lookahead's k; the outer loop's tau, divide_by_lr, its
// rule's kind and form (rule/rule, rule/nesterov);
// LocalSgd's H and warmup_steps; Sgp's peers) and their bases' options under "base/".
TEST_CASE("combinators: structural options (k, tau, H, warmup_steps, peers, base/...) must match") {
  using namespace slowmo;
  static SingleWorker solo;
  auto names = [](const std::string& m, const std::string& field) {
    CAPTURE(m);
    CHECK(contains(m, "crafted.ckpt: structural option '" + field + "' differs"));
  };
  {
    SlowMo t(Sgd<float>({.lr = 0.1}), solo, {.tau = 12});
    names(load_into(SlowMo(Sgd<float>({.lr = 0.1}), solo, {.tau = 6}), t), "tau");
    SlowMo n(Sgd<float>({.lr = 0.1}), solo, {.tau = 6, .nesterov = true});
    names(load_into(SlowMo(Sgd<float>({.lr = 0.1}), solo, {.tau = 6}), n), "rule/nesterov");
    SlowMo plain(Sgd<float>({.lr = 0.2}), solo, {.tau = 6, .alpha = 0.5, .beta = 0.7});  // alpha, beta, lr: plain
    CHECK(load_into(SlowMo(Sgd<float>({.lr = 0.1}), solo, {.tau = 6}), plain) == "(loaded)");
    // FedAdam and FedYogi keep the same buffers (exp_avg, exp_avg_sq) that mean different things.
    auto fed = [](auto rule) { return outer_loop(Sgd<float>({.lr = 0.1}), solo, {.tau = 6}, rule); };
    auto adam = fed(outer::FedAdam<float>());
    names(load_into(fed(outer::FedYogi<float>()), adam), "rule/rule");
    CHECK(load_into(fed(outer::FedAdam<float>({.lr = 0.5})), adam) == "(loaded)");
    // A residual exists only with error feedback; top-k's k is plain (what is sent, not what
    // the residual means).
    auto top_k = [](bool error_feedback, std::int64_t k) {
      return outer_loop(Sgd<float>({.lr = 0.1}), solo, {.tau = 2}, outer::HeavyBall<float>(),
                        compress::compressed(compress::TopK<float>({.k = k}), {.error_feedback = error_feedback}));
    };
    auto with_residual = top_k(true, 2);
    names(load_into(top_k(false, 2), with_residual), "reduce/error_feedback");
    CHECK(load_into(top_k(true, 1), with_residual) == "(loaded)");
  }
  {
    LocalSgd t(Sgd<float>({.lr = 0.1}), solo, {.H = 4});
    names(load_into(LocalSgd(Sgd<float>({.lr = 0.1}), solo, {.H = 3}), t), "H");
    LocalSgd w(Sgd<float>({.lr = 0.1}), solo, {.H = 3, .warmup_steps = 2});
    names(load_into(LocalSgd(Sgd<float>({.lr = 0.1}), solo, {.H = 3}), w), "warmup_steps");
  }
  {
    Lookahead t(Adam<float>({.lr = 0.1}), {.k = 3});
    names(load_into(Lookahead(Adam<float>({.lr = 0.1}), {.k = 2}), t), "k");
    Lookahead a(Adam<float>({.lr = 0.1, .amsgrad = true}), {.k = 2});
    names(load_into(Lookahead(Adam<float>({.lr = 0.1}), {.k = 2}), a), "base/amsgrad");
  }
  std::vector<std::string> sgp(3);
  sim::run({.workers = 3}, [&](sim::Comm& c) {
    Sgp t(Sgd<double>({.lr = 0.1}), c, 2);
    sgp[std::size_t(c.rank())] = load_into(Sgp(Sgd<double>({.lr = 0.1}), c, 1), t);
  });
  for (const std::string& m : sgp) names(m, "peers");
}

TEST_CASE("loading a directory is a checkpoint_error naming the path") {
  const fs::path dir = scratch_dir() / "a_directory.ckpt";
  fs::create_directories(dir);
  slowmo::Adam<float> opt({});
  std::string message = "(no error)";
  try {
    slowmo::load_checkpoint(opt, dir);
  } catch (const slowmo::checkpoint_error& e) {
    message = e.what();
  }
  CHECK(contains(message, dir.string() + ": cannot open"));
  CHECK(contains(message, "directory"));
  fs::remove_all(scratch_dir());
}

TEST_CASE("temporary files: never shared, a stale one is stepped around, none is left behind") {
  const fs::path dir = scratch_dir();
  const fs::path file = dir / "tmp.ckpt";
  slowmo::Sgd<double> opt({.lr = 0.1, .momentum = 0.9});
  Vector<double> x = Vector<double>::Ones(4);
  take_steps(opt, x, 0, 2);
  // A leftover of an earlier process that named its temporary file after the object's address
  // (here a directory, so that it cannot be overwritten).
  fs::path by_address = file;
  by_address += ".tmp." + std::to_string(std::uintptr_t(&opt));
  fs::create_directories(by_address);
  // And leftovers of this process id (a crashed process with the same pid): the save goes on
  // to a name that is free.
  for (int k = 0; k < 40; ++k) {
    fs::path stale = file;
    stale += ".tmp." + std::to_string(::getpid()) + "." + std::to_string(k);
    fs::create_directories(stale);
  }
  CHECK_NOTHROW(slowmo::save_checkpoint(opt, file));
  slowmo::Sgd<double> back({.lr = 0.1, .momentum = 0.9});
  slowmo::load_checkpoint(back, file);
  CHECK(snapshot(back) == snapshot(opt));
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir)) files += e.is_regular_file() ? 1 : 0;
  CHECK(files == 1);  // the checkpoint, no temporary
  // Saving over a directory fails cleanly, leaving no temporary file.
  CHECK_THROWS_AS(slowmo::save_checkpoint(opt, by_address), slowmo::checkpoint_error);
  files = 0;
  for (const auto& e : fs::directory_iterator(dir)) files += e.is_regular_file() ? 1 : 0;
  CHECK(files == 1);
  fs::remove_all(dir);
}

TEST_CASE("two processes saving the same path concurrently: every save succeeds, every load sees a whole file") {
  const fs::path file = scratch_dir() / "shared.ckpt";
  // The same object at the same address in both processes (fork): an address-derived
  // temporary name would be shared by the two writers.
  slowmo::Sgd<double> opt({.lr = 0.1, .momentum = 0.9});
  Vector<double> x = Vector<double>::Ones(64);
  take_steps(opt, x, 0, 1);
  slowmo::save_checkpoint(opt, file);
  auto work = [&](int steps) {  // returns the number of failures
    slowmo::Sgd<double> mine = opt;
    Vector<double> y = x;
    take_steps(mine, y, 1, 1 + steps);  // the two processes hold different states
    int failures = 0;
    for (int i = 0; i < 150; ++i) {
      try {
        slowmo::save_checkpoint(mine, file);
        slowmo::Sgd<double> back({.lr = 0.1, .momentum = 0.9});
        slowmo::load_checkpoint(back, file);
      } catch (const std::exception&) {
        ++failures;
      }
    }
    return failures;
  };
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) ::_exit(work(2) == 0 ? 0 : 1);
  const int parent_failures = work(3);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(parent_failures == 0);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  int files = 0;
  for (const auto& e : fs::directory_iterator(file.parent_path())) files += e.is_regular_file() ? 1 : 0;
  CHECK(files == 1);
  fs::remove_all(file.parent_path());
}
