// compare: the flagship comparison. Eleven algorithms train the same heterogeneous softmax
// regression on 16 simulated workers over a modelled network; writes a CSV and PNG plots of
// the loss against steps and against simulated wall-clock time, and prints a summary.
//
//   compare [output-directory]        (default: ./compare_out)
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "common/softmax_training.hpp"

namespace {

constexpr int workers = 16;

struct Curve {
  std::string name;
  std::vector<int> step{};
  std::vector<double> time{}, excess{}, mb_per_worker{};
  double accuracy = 0;
};

void progress(double fraction, const std::string& what) {
  const int width = 30, done = int(fraction * width + 0.5);
  std::fprintf(stderr, "\r[%s%s] %3d%%  %-40s", std::string(std::size_t(done), '#').c_str(),
               std::string(std::size_t(width - done), '.').c_str(), int(fraction * 100 + 0.5), what.c_str());
  std::fflush(stderr);
}

}  // namespace

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  using Comm = slowmo::sim::Comm;
  using A = example::Algorithms<Comm>;
  const fs::path out = argc > 1 ? argv[1] : "compare_out";
  fs::create_directories(out);

  const slowmo::problems::LogisticRegression problem(example::softmax_problem(workers));
  const slowmo::sim::Network network{.latency = 50e-6, .bandwidth = 1.25e9};
  const example::Settings settings;
  std::printf("softmax regression: %d workers, %lld parameters, Dirichlet(0.3) label skew; network %s; %.0f ms "
              "compute per step; %d steps\n",
              workers, static_cast<long long>(problem.dim()), network.describe().c_str(),
              settings.compute_seconds * 1e3, settings.steps);

  using Runner = std::function<std::vector<example::Trace>()>;
  auto runner = [&](auto make) -> Runner {
    return [&problem, &settings, &network, make] {
      std::vector<example::Trace> traces(workers);
      slowmo::sim::run({.workers = workers, .network = network}, [&](Comm& c) {
        traces[std::size_t(c.rank())] = example::train(c, problem, make, settings);
      });
      return traces;
    };
  };
  const std::vector<std::pair<std::string, Runner>> algorithms = {
      {"AR-SGD", runner(A::ar_sgd)},
      {"Local SGD (H 12)", runner(A::local_sgd)},
      {"SGP (1 peer)", runner(A::sgp)},
      {"SlowMo (tau 12)", runner(A::slowmo)},
      {"SlowMo, EF top-1% (tau 12)", runner(A::slowmo_ef_top_k)},
      {"SparseLoCo, top-1% (H 12)", runner(A::sparseloco)},
      {"SlowMo over Local SGD (H 4, tau 12)", runner(A::slowmo_local_sgd)},
      {"SlowMo over SGP (tau 12)", runner(A::slowmo_sgp)},
      {"BMUF-NBM (tau 12)", runner(A::bmuf)},
      {"DiLoCo (H 12)", runner(A::diloco)},
      {"Lookahead over AR-SGD (k 5)", runner(A::lookahead)},
  };

  std::vector<Curve> curves;
  for (std::size_t a = 0; a < algorithms.size(); ++a) {
    progress(double(a) / double(algorithms.size()), algorithms[a].first);
    const auto traces = algorithms[a].second();
    Curve c{.name = algorithms[a].first};
    for (std::size_t e = 0; e < traces[0].step.size(); ++e) {
      Eigen::VectorXf mean = Eigen::VectorXf::Zero(problem.dim());
      double t = 0, mb = 0;
      for (const auto& tr : traces) {
        mean += tr.x[e] / float(workers);
        t = std::max(t, tr.time[e]);
        mb += double(tr.bytes[e]) / 1e6 / workers;
      }
      c.step.push_back(traces[0].step[e]);
      c.time.push_back(t);
      c.excess.push_back(problem.excess_loss(slowmo::Vector<float>(mean)));
      c.mb_per_worker.push_back(mb);
      if (e + 1 == traces[0].step.size()) c.accuracy = problem.accuracy(slowmo::Vector<float>(mean));
    }
    curves.push_back(std::move(c));
  }
  progress(1.0, "done");
  std::fprintf(stderr, "\n");

  // CSV and gnuplot data (one block per algorithm).
  std::ofstream csv(out / "compare.csv"), dat(out / "curves.dat");
  csv << "algorithm,step,sim_time_s,excess_loss,bytes_sent_per_worker\n";
  for (const auto& c : curves) {
    dat << "# " << c.name << "\n";
    for (std::size_t e = 0; e < c.step.size(); ++e) {
      csv << '"' << c.name << "\"," << c.step[e] << ',' << c.time[e] << ',' << c.excess[e] << ','
          << c.mb_per_worker[e] * 1e6 << '\n';
      dat << c.step[e] << ' ' << c.time[e] << ' ' << c.excess[e] << '\n';
    }
    dat << "\n\n";
  }
  dat.close();
  csv.close();

  // Summary.
  const double target = 0.05;
  std::printf("\n%-38s %12s %9s %11s %14s %18s\n", "algorithm", "f(x) - f*", "accuracy", "sim. time",
              "MB per worker", "time to f-f* < 0.05");
  for (const auto& c : curves) {
    double reach = -1;
    for (std::size_t e = 0; e < c.step.size(); ++e)
      if (c.excess[e] < target) {
        reach = c.time[e];
        break;
      }
    char reach_text[32] = "not reached";
    if (reach >= 0) std::snprintf(reach_text, sizeof reach_text, "%.3f s", reach);
    std::printf("%-38s %12.4f %8.1f%% %9.3f s %14.2f %18s\n", c.name.c_str(), c.excess.back(), 100 * c.accuracy,
                c.time.back(), c.mb_per_worker.back(), reach_text);
  }

  // Plots.
  std::ofstream gp(out / "plots.gp");
  auto plot = [&](const char* file, int xcol, const char* xlabel) {
    gp << "set terminal pngcairo size 900,560 font ',10'\nset output '" << file << "'\n"
       << "set logscale y\nset grid\nset key top right\nset ylabel 'f(mean x) - f*'\nset xlabel '" << xlabel
       << "'\nset title 'Softmax regression, " << workers << " workers, " << network.describe() << "'\nplot ";
    for (std::size_t a = 0; a < curves.size(); ++a)
      gp << (a ? ", " : "") << "'curves.dat' index " << a << " using " << xcol << ":3 with lines lw 2 title '"
         << curves[a].name << "'";
    gp << "\n";
  };
  plot("loss_vs_step.png", 1, "step");
  plot("loss_vs_time.png", 2, "simulated wall-clock time (s)");
  gp.close();
  const std::string cmd = "cd '" + out.string() + "' && gnuplot plots.gp";
  const bool plotted = std::system("command -v gnuplot > /dev/null 2>&1") == 0 && std::system(cmd.c_str()) == 0;
  std::printf("\nwrote %s, %s\n", (out / "compare.csv").c_str(),
              plotted ? ((out / "loss_vs_step.png").string() + ", " + (out / "loss_vs_time.png").string()).c_str()
                      : "(no plots: gnuplot is not installed; cmake/setup-debian.sh installs it)");
  return 0;
}
