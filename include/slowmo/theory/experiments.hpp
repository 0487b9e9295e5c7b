// slowmo/theory/experiments.hpp — the measurements that the closed forms of
// theory/closed_forms.hpp predict, run on the simulator with the library's own algorithms.
// tests/theory checks each against its closed form; examples/theory plots them.
//
// Stochastic measurements return a mean with its standard error, estimated from batch
// means (the run is cut into `batches` consecutive blocks, long compared with the
// process's correlation time, whose means are nearly independent).
#pragma once

#include <cmath>
#include <vector>

#include "slowmo/comm/simulator.hpp"
#include "slowmo/distributed/local_sgd.hpp"
#include "slowmo/distributed/slowmo.hpp"
#include "slowmo/optim/lookahead.hpp"
#include "slowmo/optim/sgd.hpp"
#include "slowmo/problems/quadratic.hpp"

namespace slowmo::theory {

struct Estimate {
  double mean = 0;
  double standard_error = 0;
};

/// Mean and standard error of a series from the means of `batches` equal blocks.
inline Estimate batch_means(const std::vector<double>& series, int batches = 20) {
  const std::size_t per = series.size() / std::size_t(batches);
  std::vector<double> means(std::size_t(batches), 0.0);
  for (std::size_t b = 0; b < std::size_t(batches); ++b) {
    for (std::size_t k = 0; k < per; ++k) means[b] += series[b * per + k];
    means[b] /= double(per);
  }
  double mean = 0, var = 0;
  for (double m : means) mean += m / batches;
  for (double m : means) var += (m - mean) * (m - mean) / (batches - 1);
  return {mean, std::sqrt(var / batches)};
}

/// Stationary f(x_bar) - f* of Local SGD (plain SGD, lr eta, averaging every H steps) on a
/// noisy quadratic, x_bar the average iterate after every step.
inline Estimate local_sgd_stationary_loss(const problems::Quadratic& p, double eta, int H, int burn_in, int steps) {
  std::vector<double> series;
  sim::run({.workers = p.workers(), .network = sim::Network::free()}, [&](sim::Comm& comm) {
    LocalSgd opt(Sgd<double>({.lr = eta}), comm, {.H = H});
    Vector<double> x = Vector<double>::Zero(p.dim()), g(p.dim()), avg(p.dim());
    opt.start(x);
    for (int t = 0; t < burn_in + steps; ++t) {
      p.sample_gradient(comm.rank(), t, x, g);
      opt.step(x, g);
      avg = x;
      comm.all_reduce(as_span(avg), ReduceOp::mean);
      if (comm.rank() == 0 && t >= burn_in) series.push_back(p.excess_loss(avg));
    }
  });
  return batch_means(series);
}

/// Outer iterates x0 (one value per outer step) of SlowMo over plain gradient descent on a
/// one-dimensional problem, K local steps per round, for `rounds` rounds.
inline std::vector<double> slowmo_outer_iterates(const problems::Quadratic& p, double eta, int K, SlowMoOptions outer,
                                                 int rounds, double x_start) {
  std::vector<double> x0;
  outer.tau = K;
  sim::run({.workers = p.workers(), .network = sim::Network::free()}, [&](sim::Comm& comm) {
    SlowMo opt(Sgd<double>({.lr = eta}), comm, outer);
    Vector<double> x = Vector<double>::Constant(1, x_start), g(1);
    opt.start(x);
    for (int t = 0; t < K * rounds; ++t) {
      p.gradient(comm.rank(), x, g);
      opt.step(x, g);
      if (comm.rank() == 0 && (t + 1) % K == 0) x0.push_back(x[0]);
    }
  });
  return x0;
}

/// Contraction per outer step measured on a series of errors e_t. Oscillating errors (complex
/// roots) are followed by their envelope, env_t = max(|e_t|, ..., |e_{t+W-1}|) with W = 8;
/// the rate is the geometric mean decay of env from where it first falls below
/// `from` * env_0 (the faster mode has died out) to where it falls below `to` * env_0
/// (double precision still resolves e). NaN if the series does not get that far.
inline double measured_rate(const std::vector<double>& e, double from = 1e-2, double to = 1e-10) {
  const std::size_t W = 8;
  if (e.size() <= W) return std::nan("");
  std::vector<double> env(e.size() - W + 1);
  for (std::size_t t = 0; t < env.size(); ++t)
    for (std::size_t k = 0; k < W; ++k) env[t] = std::max(env[t], std::abs(e[t + k]));
  std::size_t t1 = 0, t2 = 0;
  for (std::size_t t = 1; t < env.size(); ++t) {
    if (!t1 && env[t] < from * env[0]) t1 = t;
    if (t1 && env[t] < to * env[0]) {
      t2 = t;
      break;
    }
  }
  if (!t1 || !t2) return std::nan("");
  return std::exp((std::log(env[t2]) - std::log(env[t1])) / double(t2 - t1));
}

/// Stationary variance of Lookahead's slow weights (sampled at every sync) divided by that
/// of plain SGD's iterates, one worker, noisy quadratic with `dim` independent coordinates
/// of the same curvature (p.dim() coordinates, p.workers() == 1, centre 0).
inline Estimate lookahead_variance_ratio(const problems::Quadratic& p, double eta, int k, double alpha, int burn_in_syncs,
                                         int syncs) {
  const Eigen::Index d = p.dim();
  Lookahead la(Sgd<double>({.lr = eta}), {.k = k, .alpha = alpha});
  Sgd<double> sgd({.lr = eta});
  Vector<double> x = Vector<double>::Zero(d), y = x, g(d);
  std::vector<double> la_series, sgd_series;
  for (int s = 0; s < burn_in_syncs + syncs; ++s) {
    double sgd_var = 0;
    for (int j = 0; j < k; ++j) {
      const int t = s * k + j;
      p.sample_gradient(0, t, x, g);
      la.step(x, g);
      p.sample_gradient(0, t, y, g);  // the same noise for both
      sgd.step(y, g);
      sgd_var += y.squaredNorm() / double(d) / k;
    }
    if (s >= burn_in_syncs) {
      la_series.push_back(x.squaredNorm() / double(d));  // x is the slow weights right after a sync
      sgd_series.push_back(sgd_var);
    }
  }
  const Estimate la_var = batch_means(la_series), sgd_var = batch_means(sgd_series);
  const double ratio = la_var.mean / sgd_var.mean;
  // first-order error propagation for a ratio of (nearly independent) estimates
  const double rel = std::hypot(la_var.standard_error / la_var.mean, sgd_var.standard_error / sgd_var.mean);
  return {ratio, ratio * rel};
}

/// Consensus distance (1/M) sum_i |x_i - x_bar|^2 / dim after each of the H local steps
/// that follow an average, Local SGD on a noisy quadratic; averaged over `rounds` rounds.
inline std::vector<Estimate> consensus_distances(const problems::Quadratic& p, double eta, int H, int rounds) {
  std::vector<std::vector<double>> per_k(static_cast<std::size_t>(H));
  sim::run({.workers = p.workers(), .network = sim::Network::free()}, [&](sim::Comm& comm) {
    LocalSgd opt(Sgd<double>({.lr = eta}), comm, {.H = H});
    const Eigen::Index d = p.dim();
    Vector<double> x = Vector<double>::Zero(d), g(d), avg(d), dist(1);
    opt.start(x);
    for (int t = 0; t < H * rounds; ++t) {
      p.sample_gradient(comm.rank(), t, x, g);
      opt.step(x, g);
      const int k = t % H + 1;  // local steps since the last average (k = H: just averaged)
      if (k == H) continue;
      avg = x;
      comm.all_reduce(as_span(avg), ReduceOp::mean);
      dist[0] = (x - avg).squaredNorm() / double(d);
      comm.all_reduce(as_span(dist), ReduceOp::mean);
      if (comm.rank() == 0) per_k[std::size_t(k - 1)].push_back(dist[0]);
    }
  });
  std::vector<Estimate> out;
  for (int k = 1; k < H; ++k) out.push_back(batch_means(per_k[std::size_t(k - 1)]));
  return out;
}

}  // namespace slowmo::theory
