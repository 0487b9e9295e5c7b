// AsyncLocalSgd on a communicator without a shared model (as the NCCL one): one line says
// what is missing. (Compiled by tests/CMakeLists.txt's slowmo_compile_fail_test, not run.)
#include <memory>
#include <slowmo/distributed/async_local_sgd.hpp>
#include <slowmo/optim/sgd.hpp>
#include <span>
#include <vector>

struct NoSharedModel {
  int rank() const { return 0; }
  int size() const { return 1; }
  template <class T>
  void all_reduce(std::span<T>, slowmo::ReduceOp) {}
  template <class T>
  void broadcast(std::span<T>, int) {}
  template <class T>
  double exchange(std::span<const T>, double, int, std::span<T>, int) {
    return 0;
  }
  void barrier() {}
  double now() const { return 0; }
#ifdef SLOWMO_COMPILE_FAIL_CONTROL
  template <class T>
  void host_model(std::unique_ptr<slowmo::ModelServer<T>>) {}
  template <class T>
  slowmo::Pulled pull(std::span<T>) {
    return {};
  }
  template <class T>
  slowmo::Pushed push(std::span<const T>) {
    return {};
  }
  std::vector<int> departed() const { return {}; }
#endif
};

int main() {
  NoSharedModel comm;
  auto opt = slowmo::AsyncLocalSgd(slowmo::Sgd<float>({.lr = 0.1f}), comm, {.H = 2});
  (void)opt;
}
