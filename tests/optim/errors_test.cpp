// Bad input: every invalid option and every bad call throws an exception whose message
// names the parameter and the value.
#include <doctest/doctest.h>

#include <limits>

#include <slowmo/optim/adagrad.hpp>
#include <slowmo/optim/adam.hpp>
#include <slowmo/optim/adamax.hpp>
#include <slowmo/optim/delta_sgd.hpp>
#include <slowmo/optim/lion.hpp>
#include <slowmo/optim/lookahead.hpp>
#include <slowmo/optim/nadam.hpp>
#include <slowmo/optim/qhadam.hpp>
#include <slowmo/optim/qhm.hpp>
#include <slowmo/optim/rmsprop.hpp>
#include <slowmo/optim/sgd.hpp>

namespace {

using slowmo::Vector;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

template <class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const slowmo::invalid_option& e) {
    return e.what();
  }
  FAIL("no slowmo::invalid_option thrown");
  return {};
}

#define CHECK_OPTION_ERROR(expr, ...)                                            \
  do {                                                                           \
    const std::string msg = message_of([&] { (void)(expr); });                   \
    for (const char* part : {__VA_ARGS__}) CHECK_MESSAGE(msg.find(part) != std::string::npos, msg); \
  } while (0)

}  // namespace

TEST_CASE("Sgd: invalid options name the field and the value") {
  using slowmo::Sgd;
  CHECK_OPTION_ERROR(Sgd<float>({.lr = -0.1}), "Sgd", "'lr'", "-0.1");
  CHECK_OPTION_ERROR(Sgd<float>({.lr = kNaN}), "'lr'", "nan");
  CHECK_OPTION_ERROR(Sgd<float>({.lr = kInf}), "'lr'", "inf");
  CHECK_OPTION_ERROR(Sgd<double>({.momentum = -0.5}), "'momentum'", "-0.5");
  CHECK_OPTION_ERROR(Sgd<double>({.dampening = 1.5}), "'dampening'", "1.5");
  CHECK_OPTION_ERROR(Sgd<double>({.weight_decay = -1e-4}), "'weight_decay'", "-1e-04");
  CHECK_OPTION_ERROR(Sgd<double>({.weight_decay = kNaN}), "'weight_decay'", "nan");
  CHECK_OPTION_ERROR(Sgd<double>({.momentum = 0.0, .nesterov = true}), "'momentum'", "= 0 ", "Nesterov");
  CHECK_OPTION_ERROR(Sgd<double>({.momentum = 0.9, .dampening = 0.1, .nesterov = true}), "'dampening'", "0.1",
                     "Nesterov");
  CHECK_OPTION_ERROR(slowmo::Nesterov<double>({.momentum = 0.0}), "'momentum'", "Nesterov");
  CHECK_NOTHROW(Sgd<double>({.lr = 0.0}));  // lr = 0 is allowed, as in PyTorch
}

TEST_CASE("Adam/AdamW: invalid options name the field and the value") {
  CHECK_OPTION_ERROR(slowmo::Adam<float>({.lr = -1.0}), "Adam", "'lr'", "-1");
  CHECK_OPTION_ERROR(slowmo::Adam<float>({.betas = {1.0, 0.999}}), "'betas[0]'", "= 1 ");
  CHECK_OPTION_ERROR(slowmo::Adam<float>({.betas = {0.9, -0.1}}), "'betas[1]'", "-0.1");
  CHECK_OPTION_ERROR(slowmo::AdamW<float>({.betas = {0.9, kNaN}}), "AdamW", "'betas[1]'", "nan");
  CHECK_OPTION_ERROR(slowmo::Adam<double>({.eps = -1e-8}), "'eps'", "-1e-08");
  CHECK_OPTION_ERROR(slowmo::AdamW<double>({.weight_decay = -0.01}), "AdamW", "'weight_decay'", "-0.01");
}

TEST_CASE("RMSprop, Adagrad, NAdam, Adamax: invalid options name the field and the value") {
  CHECK_OPTION_ERROR(slowmo::RMSprop<float>({.lr = -0.01}), "RMSprop", "'lr'", "-0.01");
  CHECK_OPTION_ERROR(slowmo::RMSprop<float>({.alpha = 1.5}), "RMSprop", "'alpha'", "1.5");
  CHECK_OPTION_ERROR(slowmo::RMSprop<float>({.eps = kNaN}), "'eps'", "nan");
  CHECK_OPTION_ERROR(slowmo::RMSprop<double>({.weight_decay = -0.1}), "'weight_decay'", "-0.1");
  CHECK_OPTION_ERROR(slowmo::RMSprop<double>({.momentum = -0.9}), "'momentum'", "-0.9");
  CHECK_OPTION_ERROR(slowmo::Adagrad<float>({.lr_decay = -1.0}), "Adagrad", "'lr_decay'", "-1");
  CHECK_OPTION_ERROR(slowmo::Adagrad<float>({.weight_decay = kInf}), "'weight_decay'", "inf");
  CHECK_OPTION_ERROR(slowmo::Adagrad<double>({.initial_accumulator_value = -0.5}), "'initial_accumulator_value'",
                     "-0.5");
  CHECK_OPTION_ERROR(slowmo::Adagrad<double>({.eps = -1e-10}), "'eps'", "-1e-10");
  CHECK_OPTION_ERROR(slowmo::NAdam<float>({.betas = {0.9, 1.0}}), "NAdam", "'betas[1]'", "= 1 ");
  CHECK_OPTION_ERROR(slowmo::NAdam<float>({.betas = {-0.1, 0.999}}), "'betas[0]'", "-0.1");
  CHECK_OPTION_ERROR(slowmo::NAdam<double>({.momentum_decay = -4e-3}), "'momentum_decay'", "-0.004");
  CHECK_OPTION_ERROR(slowmo::NAdam<double>({.weight_decay = kNaN}), "'weight_decay'", "nan");
  CHECK_OPTION_ERROR(slowmo::Adamax<float>({.lr = kNaN}), "Adamax", "'lr'", "nan");
  CHECK_OPTION_ERROR(slowmo::Adamax<float>({.betas = {1.0, 0.999}}), "'betas[0]'", "= 1 ");
  CHECK_OPTION_ERROR(slowmo::Adamax<double>({.eps = -1.0}), "'eps'", "-1");
}

TEST_CASE("QHM, QHAdam, Lion: invalid options name the field and the value") {
  CHECK_OPTION_ERROR(slowmo::Qhm<float>({.nu = 1.5}), "Qhm", "'nu'", "1.5");
  CHECK_OPTION_ERROR(slowmo::Qhm<float>({.beta = 1.0}), "'beta'", "= 1 ");
  CHECK_OPTION_ERROR(slowmo::Qhm<double>({.weight_decay = -0.01}), "'weight_decay'", "-0.01");
  CHECK_OPTION_ERROR(slowmo::Qhm<double>({.lr = -1.0}), "'lr'", "-1");
  CHECK_OPTION_ERROR(slowmo::QhAdam<float>({.nus = {0.7, -0.5}}), "QhAdam", "'nus[1]'", "-0.5");
  CHECK_OPTION_ERROR(slowmo::QhAdam<float>({.nus = {kNaN, 1.0}}), "'nus[0]'", "nan");
  CHECK_OPTION_ERROR(slowmo::QhAdam<double>({.betas = {0.995, 1.5}}), "'betas[1]'", "1.5");
  CHECK_OPTION_ERROR(slowmo::QhAdam<double>({.eps = -1e-8}), "'eps'", "-1e-08");
  CHECK_OPTION_ERROR(slowmo::Lion<float>({.betas = {1.5, 0.99}}), "Lion", "'betas[0]'", "1.5");
  CHECK_OPTION_ERROR(slowmo::Lion<float>({.betas = {0.9, 1.0}}), "'betas[1]'", "= 1 ");
  CHECK_OPTION_ERROR(slowmo::Lion<double>({.weight_decay = -1.0}), "'weight_decay'", "-1");
  CHECK_NOTHROW(slowmo::Lion<double>({.betas = {1.0, 0.99}}));  // beta1 = 1: c = m, allowed
}

TEST_CASE("DeltaSgd: invalid options name the field and the value") {
  CHECK_OPTION_ERROR(slowmo::DeltaSgd<float>({.lr = 0.0}), "DeltaSgd", "'lr'", "= 0 ");
  CHECK_OPTION_ERROR(slowmo::DeltaSgd<float>({.gamma = -2.0}), "'gamma'", "-2");
  CHECK_OPTION_ERROR(slowmo::DeltaSgd<double>({.delta = kNaN}), "'delta'", "nan");
  CHECK_OPTION_ERROR(slowmo::DeltaSgd<double>({.theta0 = -1.0}), "'theta0'", "-1");
  CHECK_OPTION_ERROR(slowmo::DeltaSgd<double>({.eps = -1e-8}), "'eps'", "-1e-08");
  CHECK_NOTHROW(slowmo::DeltaSgd<double>({.delta = 0.0, .theta0 = 0.0, .eps = 0.0}));
}

TEST_CASE("Lookahead: invalid options name the field and the value") {
  const slowmo::Sgd<float> base({.lr = 0.1});
  CHECK_OPTION_ERROR(slowmo::Lookahead(base, {.k = 0}), "Lookahead", "'k'", "= 0 ");
  CHECK_OPTION_ERROR(slowmo::Lookahead(base, {.k = -3}), "'k'", "-3");
  CHECK_OPTION_ERROR(slowmo::Lookahead(base, {.alpha = 0.0}), "'alpha'", "= 0 ");
  CHECK_OPTION_ERROR(slowmo::Lookahead(base, {.alpha = 1.5}), "'alpha'", "1.5");
  CHECK_OPTION_ERROR(slowmo::Lookahead(base, {.alpha = kNaN}), "'alpha'", "nan");
  CHECK_OPTION_ERROR(slowmo::Lookahead(base, {.base_state = slowmo::OnSync::average}), "'base_state'", "average");
}

TEST_CASE("Schedules: invalid parameters are reported when the optimizer is built") {
  using namespace slowmo::schedule;
  using SgdStep = slowmo::Sgd<float, StepDecay>;
  using SgdCosine = slowmo::Sgd<float, Cosine>;
  CHECK_OPTION_ERROR(SgdStep({.lr = 0.1}, {.step_size = 0}), "StepDecay", "'step_size'", "0");
  CHECK_OPTION_ERROR(SgdCosine({.lr = 0.1}, {.total_steps = 10, .min_factor = 2}), "Cosine", "'min_factor'", "2");
  CHECK_OPTION_ERROR(warmup_cosine(100, 50), "'warmup_steps'", "100");
}

TEST_CASE_TEMPLATE("step: mismatched, empty and changing sizes throw size_mismatch naming both sizes", T, float,
                   double) {
  auto check_sizes = [](auto opt) {
    Vector<T> x = Vector<T>::Ones(4);
    const Vector<T> g3 = Vector<T>::Ones(3), g4 = Vector<T>::Ones(4);
    const Vector<T> x_before = x;
    CHECK_THROWS_WITH_AS(opt.step(x, g3), doctest::Contains("gradient size 3 does not match parameter size 4"),
                         slowmo::size_mismatch);
    CHECK(x == x_before);  // nothing was touched
    CHECK(opt.steps() == 0);
    Vector<T> empty(0);
    CHECK_THROWS_WITH_AS(opt.step(empty, Vector<T>(0)), doctest::Contains("parameter vector is empty"),
                         slowmo::size_mismatch);
    opt.step(x, g4);
    Vector<T> x5 = Vector<T>::Ones(5);
    CHECK_THROWS_WITH_AS(opt.step(x5, Vector<T>(Vector<T>::Ones(5))),
                         doctest::Contains("parameter size 5 differs from the size 4"), slowmo::size_mismatch);
  };
  check_sizes(slowmo::Sgd<T>({.lr = 0.1, .momentum = 0.9}));
  check_sizes(slowmo::Adam<T>({.lr = 0.1}));
  check_sizes(slowmo::RMSprop<T>({.lr = 0.1, .momentum = 0.5, .centered = true}));
  check_sizes(slowmo::Adagrad<T>({.lr = 0.1}));
  check_sizes(slowmo::NAdam<T>({.lr = 0.1}));
  check_sizes(slowmo::Adamax<T>({.lr = 0.1}));
  check_sizes(slowmo::Qhm<T>({.lr = 0.1}));
  check_sizes(slowmo::QhAdam<T>({.lr = 0.1}));
  check_sizes(slowmo::Lion<T>({.lr = 0.1}));
  check_sizes(slowmo::DeltaSgd<T>());
  check_sizes(slowmo::Lookahead(slowmo::Sgd<T>({.lr = 0.1}), {.k = 2}));
}
