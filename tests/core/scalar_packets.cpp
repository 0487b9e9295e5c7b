// Compiled with -DEIGEN_DONT_VECTORIZE (tests/CMakeLists.txt): where Eigen has no SIMD for a
// scalar type its "packet" is the scalar itself (also in nvcc's host pass), and the CPU
// driver must still compile, with plain scalars.
#include <slowmo/slowmo.hpp>

template <class T>
void every_rule() {
  using namespace slowmo;
  Vector<T> x = Vector<T>::Ones(9), g = x;
  Sgd<T>({.momentum = 0.9, .nesterov = true}).step(x, g);
  Adam<T>({.amsgrad = true}).step(x, g);
  Lookahead(AdamW<T>(), {.k = 1}).step(x, g);
  lookahead_as_slowmo(Sgd<T>(), 1, 0.5).step(x, g);
  sim::run({.workers = 3}, [](sim::Comm& comm) {
    Vector<T> y = Vector<T>::Ones(5);
    Sgp(Sgd<T>(), comm, 2).step(y, y);
  });
}

int main() {
  every_rule<float>();
  every_rule<double>();
}
