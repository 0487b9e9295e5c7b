// Independent runs of an example (each one whole simulation) spread over a few threads, with
// a progress bar on stderr. Every run is deterministic on its own, so the results do not
// depend on the number of threads or on which thread ran what.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace example {

/// How many runs at once by default: two (this project's reference machine has two cores),
/// fewer where the machine has fewer.
inline int default_jobs() { return int(std::max(1u, std::min(2u, std::thread::hardware_concurrency()))); }

/// The command line every comparison example takes: `[--quick] [--jobs N] [output-directory]`.
/// The directory is created.
struct RunArgs {
  std::filesystem::path out;
  bool quick = false;  ///< the test suite's short configuration
  int threads = default_jobs();
};
inline RunArgs parse_run_args(int argc, char** argv, const char* default_out) {
  RunArgs a{.out = default_out};
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick")
      a.quick = true;
    else if (arg == "--jobs" && i + 1 < argc)
      a.threads = std::max(1, std::atoi(argv[++i]));
    else
      a.out = arg;
  }
  std::filesystem::create_directories(a.out);
  return a;
}

/// Calls run(i) for i = 0..count-1 on `threads` threads, showing "phase [####....] k/count runs".
template <class F>
void parallel_runs(std::size_t count, int threads, F&& run, const char* phase) {
  std::atomic<std::size_t> next{0};
  std::size_t done = 0;
  std::mutex mu;
  auto bar = [&] {
    const int width = 30, filled = count ? int(double(done) / double(count) * width + 0.5) : width;
    std::fprintf(stderr, "\r%-10s [%s%s] %zu/%zu runs", phase, std::string(std::size_t(filled), '#').c_str(),
                 std::string(std::size_t(width - filled), '.').c_str(), done, count);
    std::fflush(stderr);
  };
  bar();
  auto worker = [&] {
    for (std::size_t i; (i = next++) < count;) {
      run(i);
      const std::lock_guard lock(mu);
      ++done;
      bar();
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  std::fprintf(stderr, "\n");
}

}  // namespace example
