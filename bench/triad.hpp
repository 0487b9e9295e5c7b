// The in-binary reference of the CPU benchmarks: the STREAM triad a = b + s c, timed at the
// size and type of the measurement, so that results are ratios to what the machine can do.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <map>

#include <slowmo/core/vector.hpp>

namespace bench {

template <class T>
void triad(slowmo::Vector<T>& a, const slowmo::Vector<T>& b, const slowmo::Vector<T>& c) {
  a.noalias() = b + T(1.0001) * c;
  benchmark::DoNotOptimize(a.data());
  benchmark::ClobberMemory();
}

/// The best of many timed triads (seconds), measured once per (size, type).
template <class T>
double triad_seconds(Eigen::Index n) {
  static std::map<Eigen::Index, double> cache;
  double& t = cache[n];
  if (t > 0) return t;
  slowmo::Vector<T> a = slowmo::Vector<T>::Zero(n), b = slowmo::Vector<T>::Ones(n), c = slowmo::Vector<T>::Ones(n);
  double best = 1e30;
  const int reps = n <= (1 << 16) ? 20000 : n <= (1 << 20) ? 500 : 30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    triad(a, b, c);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return t = best;
}

/// The triad's bandwidth, STREAM's convention: 3 arrays credited (bytes per second).
template <class T>
double triad_bandwidth(Eigen::Index n) {
  return 3.0 * sizeof(T) * double(n) / triad_seconds<T>(n);
}

}  // namespace bench
