// The CPU side of the parity tests, built by the host compiler with the project's flags,
// the way any user program is: Eigen's SIMD packets for the body, scalars for the tail.
#include "cuda/parity.hpp"

namespace parity {

template <class T>
Trajectory<T> cpu_reference(Config c, Eigen::Index n) {
  const Problem<T> p(n);
  Trajectory<T> out;
  with_optimizer<T, slowmo::Host>(c, [&](auto opt) {
    slowmo::Vector<T> x = p.x0, g(n);
    slowmo::start(opt, x);
    for (int t = 0; t < steps; ++t) {
      slowmo::Host::for_each(n, Problem<T>::gradient(t), g.data(), x.data(), p.a.data(), p.c.data());
      opt.step(x, g);
    }
    out = {x, state_of(opt)};
  });
  return out;
}

template Trajectory<float> cpu_reference<float>(Config, Eigen::Index);
template Trajectory<double> cpu_reference<double>(Config, Eigen::Index);

}  // namespace parity
