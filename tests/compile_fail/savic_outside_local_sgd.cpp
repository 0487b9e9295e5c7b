// Savic's scaling is refreshed by LocalSgd at the start of every round; any other
// combinator would never refresh it, so it refuses Savic in one line. The control compiles
// the same nest with LocalSgd in between. (Compiled by tests/CMakeLists.txt's
// slowmo_compile_fail_test, not run.)
#include <slowmo/comm/single_worker.hpp>
#include <slowmo/distributed/local_sgd.hpp>
#include <slowmo/distributed/outer_loop.hpp>
#include <slowmo/optim/savic.hpp>

int main() {
  slowmo::SingleWorker comm;
#ifdef SLOWMO_COMPILE_FAIL_CONTROL
  slowmo::OuterLoop opt(slowmo::LocalSgd(slowmo::Savic<float>({.lr = 0.1}), comm, {.H = 2}), comm, {.tau = 4});
#else
  slowmo::OuterLoop opt(slowmo::Savic<float>({.lr = 0.1}), comm, {.tau = 4});
#endif
  (void)opt;
}
