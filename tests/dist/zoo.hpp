// Every distributed algorithm of the library run by one SPMD function, so that the same
// program can be compared across backends (simulator, threads, MPI).
#pragma once

#include <map>
#include <string>
#include <vector>

#include <slowmo/slowmo.hpp>

namespace zoo {

/// Worker r's gradient of f_r(x) = 1/2 sum_j a_rj (x_j - c_rj)^2, heterogeneous across workers.
template <class T>
void gradient(int r, const slowmo::Vector<T>& x, slowmo::Vector<T>& g) {
  for (Eigen::Index j = 0; j < x.size(); ++j) {
    const double a = 0.5 + 0.25 * double((r + j) % 3), c = std::sin(double(3 * r + j));
    g[j] = T(a * (double(x[j]) - c));
  }
}

template <class T, class Opt>
std::vector<T> train(int r, Opt opt, int steps = 48, Eigen::Index d = 13) {
  slowmo::Vector<T> x = slowmo::Vector<T>::LinSpaced(d, T(-1), T(1)), g(d);
  if (r > 0) x *= T(1 + r);  // different starting points: the initial broadcast must align them
  for (int t = 0; t < steps; ++t) {
    gradient(r, x, g);
    opt.step(x, g);
  }
  return {x.data(), x.data() + x.size()};
}

/// Final parameters of this worker for every algorithm.
template <class T, slowmo::Communicator C>
std::map<std::string, std::vector<T>> run_all(C& comm) {
  using namespace slowmo;
  const int r = comm.rank();
  std::map<std::string, std::vector<T>> out;
  out["local_sgd"] = train<T>(r, LocalSgd(Sgd<T>({.lr = 0.1, .momentum = 0.9}), comm, {.H = 4}));
  out["post_local_sgd"] = train<T>(r, LocalSgd(Nesterov<T>({.lr = 0.1}), comm, {.H = 4, .warmup_steps = 8}));
  out["ar_sgd"] = train<T>(r, GradientAllReduce(Sgd<T>({.lr = 0.1, .momentum = 0.9}), comm));
  out["ar_adam"] = train<T>(r, GradientAllReduce(Adam<T>({.lr = 0.05}), comm));
  out["slowmo"] = train<T>(r, SlowMo(Nesterov<T>({.lr = 0.1}), comm, {.tau = 6, .beta = 0.6}));
  out["slowmo_average"] =
      train<T>(r, SlowMo(Adam<T>({.lr = 0.05}), comm, {.tau = 6, .beta = 0.5, .base_state = OnSync::average}));
  out["bmuf"] = train<T>(r, bmuf(Sgd<T>({.lr = 0.1, .momentum = 0.5}), comm, {.tau = 6}));
  out["bmuf_nbm"] = train<T>(r, bmuf(Sgd<T>({.lr = 0.1}), comm, {.tau = 6, .nesterov = true}));
  out["diloco"] = train<T>(r, diloco<T>(comm, {.H = 6, .inner_lr = 0.05}));
  out["slowmo_local_sgd"] =
      train<T>(r, SlowMo(LocalSgd(Sgd<T>({.lr = 0.1}), comm, {.H = 3}), comm, {.tau = 6, .beta = 0.5}));
  out["slowmo_lookahead_adam"] = train<T>(
      r, SlowMo(Lookahead(Adam<T>({.lr = 0.05}), {.k = 3}), comm, {.tau = 6, .beta = 0.5, .base_state = OnSync::keep}));
  if (comm.size() >= 2) {
    out["sgp"] = train<T>(r, Sgp(Nesterov<T>({.lr = 0.1}), comm));
    out["slowmo_sgp"] = train<T>(r, SlowMo(Sgp(Sgd<T>({.lr = 0.1}), comm), comm, {.tau = 6, .beta = 0.5}));
  }
  if (comm.size() >= 3) out["sgp_ring2"] = train<T>(r, Sgp(Sgd<T>({.lr = 0.1}), comm, Ring(comm.size(), 2)));
  return out;
}

}  // namespace zoo
