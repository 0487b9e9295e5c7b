// A communicator without exchange: check_communicator must say what is missing.
#include <slowmo/core/communicator.hpp>

struct NoExchange {
  int rank() const { return 0; }
  int size() const { return 1; }
  template <class T>
  void all_reduce(std::span<T>, slowmo::ReduceOp) {}
  template <class T>
  void broadcast(std::span<T>, int) {}
#ifdef SLOWMO_COMPILE_FAIL_CONTROL
  template <class T>
  double exchange(std::span<const T>, double, int, std::span<T>, int) {
    return 0;
  }
#endif
  void barrier() {}
  double now() const { return 0; }
};

static_assert(slowmo::check_communicator<NoExchange>());

int main() {}
