// TopK on a communicator without all_gather: one line says what the compressor needs.
// (Compiled by tests/CMakeLists.txt's slowmo_compile_fail_test, not run.)
#include <cstdint>
#include <slowmo/compress/compressed.hpp>
#include <slowmo/compress/top_k.hpp>
#include <span>
#include <vector>

struct NoGather {
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
  void all_gather(std::span<const std::type_identity_t<T>> send, std::span<T> recv) {
    std::copy(send.begin(), send.end(), recv.begin());
  }
  template <class T>
  std::size_t all_gather_v(std::span<const std::type_identity_t<T>> send, std::span<T> recv,
                           std::span<std::size_t> counts) {
    std::copy(send.begin(), send.end(), recv.begin());
    counts[0] = send.size();
    return send.size();
  }
#endif
};

int main() {
  NoGather comm;
  auto policy = slowmo::compress::compressed(slowmo::compress::TopK<float>({.k = 1}));
  std::vector<float> v{1, 2, 3};
  policy.reduce(std::span<float>(v), comm, {});
}
