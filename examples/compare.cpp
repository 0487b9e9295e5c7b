// compare: the flagship comparison. An MLP on Fashion-MNIST, split across 16 simulated workers
// with a Dirichlet(0.5) label skew, trained by each algorithm of examples/common/fashion_mnist.hpp
// over a modelled network. Each algorithm's base learning rate is tuned on a grid on the
// validation split (seed 0); the chosen one then runs with two more seeds, and the table and
// plots report the test set: the mean over the three seeds, with the spread (min to max).
//
//   compare [--quick] [--jobs N] [output-directory]      (default: ./compare_out)
//
// Writes runs.csv (every run, every recorded step), tuning.csv (the grid) and four PNG plots
// (test accuracy and training loss against steps and against simulated time) with gnuplot.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "common/fashion_mnist.hpp"
#include "common/jobs.hpp"

namespace {

using example::Algorithm;
using example::Curve;

/// The same grid of multipliers of each base optimizer's nominal lr for every algorithm.
std::vector<double> lr_grid = {0.25, 0.5, 1.0, 2.0, 4.0};
int seeds = 3;
constexpr double target_accuracy = 0.80;

struct Job {
  std::size_t algorithm;  // index into example::algorithms()
  double lr_scale;
  std::uint64_t seed;
  Curve curve{};
};

/// Mean, min and max over seeds of one series of the curves.
struct Band {
  std::vector<double> mean, lo, hi;
};
Band band(const std::vector<const Curve*>& runs, std::vector<double> Curve::*series) {
  Band b;
  const std::size_t n = (runs[0]->*series).size();
  for (std::size_t e = 0; e < n; ++e) {
    double sum = 0, lo = 1e300, hi = -1e300;
    for (const Curve* c : runs) {
      const double v = (c->*series)[e];
      sum += v;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    b.mean.push_back(sum / double(runs.size()));
    b.lo.push_back(lo);
    b.hi.push_back(hi);
  }
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  const example::RunArgs args = example::parse_run_args(argc, argv, "compare_out");
  const fs::path& out = args.out;
  const bool quick = args.quick;
  const int threads = args.threads;

  example::Setting setting;
  example::WorkloadOptions wo;
  if (quick) {  // a smoke run of the same pipeline (the test suite's)
    lr_grid = {0.5, 1.0};
    seeds = 2;
    setting.steps = 60;
    setting.eval_every = 20;
    wo.train_limit = 12000;
    wo.test_limit = 2000;
  }
  const slowmo::sim::Network network{.latency = 100e-6, .bandwidth = 125e6};
  const example::Workload w = example::fashion_mnist_workload(wo);
  const auto& algos = example::algorithms();
  std::printf("Fashion-MNIST: an MLP ");
  for (std::size_t l = 0; l < setting.widths.size(); ++l)
    std::printf("%s%lld", l ? "-" : "", static_cast<long long>(setting.widths[l]));
  std::printf(" (ReLU) on %d simulated workers, Dirichlet(%.1f) label skew; %lld training images, %lld validation, "
              "%lld test\nnetwork %s; %.1f ms compute per step; %d steps of batch %d; lr grid x{",
              setting.workers, setting.dirichlet_alpha, static_cast<long long>(w.train->size()),
              static_cast<long long>(w.validation.size()), static_cast<long long>(w.test.size()),
              network.describe().c_str(), setting.compute_seconds * 1e3, setting.steps, setting.batch);
  for (std::size_t k = 0; k < lr_grid.size(); ++k) std::printf("%s%g", k ? ", " : "", lr_grid[k]);
  std::printf("} of SGD 0.1 / AdamW 1e-3; %d seeds; %d threads\n", seeds, threads);

  auto run = [&](const Job& j) {
    example::Setting s = setting;
    s.seed = j.seed;
    return example::run_simulated(w, s, algos[j.algorithm].id, j.lr_scale, network);
  };

  // Tuning: every algorithm on the grid with seed 0, judged by validation accuracy at the end.
  std::vector<Job> tuning;
  for (std::size_t a = 0; a < algos.size(); ++a)
    for (double scale : lr_grid) tuning.push_back({a, scale, 0});
  example::parallel_runs(tuning.size(), threads, [&](std::size_t i) { tuning[i].curve = run(tuning[i]); }, "tuning");
  std::vector<const Job*> best(algos.size(), nullptr);
  for (const Job& j : tuning)
    if (!best[j.algorithm] || j.curve.validation_accuracy > best[j.algorithm]->curve.validation_accuracy)
      best[j.algorithm] = &j;

  // The chosen lr with the other seeds (seed 0's run is the tuning run itself).
  std::vector<Job> more;
  for (std::size_t a = 0; a < algos.size(); ++a)
    for (std::uint64_t seed = 1; seed < std::uint64_t(seeds); ++seed) more.push_back({a, best[a]->lr_scale, seed});
  example::parallel_runs(more.size(), threads, [&](std::size_t i) { more[i].curve = run(more[i]); }, "seeds");

  std::vector<std::vector<const Curve*>> runs(algos.size());
  for (std::size_t a = 0; a < algos.size(); ++a) runs[a].push_back(&best[a]->curve);
  for (const Job& j : more) runs[j.algorithm].push_back(&j.curve);

  // Files: every run, the tuning grid, and the bands for the plots.
  std::ofstream csv(out / "runs.csv"), grid(out / "tuning.csv"), dat(out / "bands.dat");
  csv << "algorithm,lr_scale,seed,step,sim_time_s,mb_sent_per_worker,test_accuracy,train_loss\n";
  auto write_run = [&](const Job& j) {
    for (std::size_t e = 0; e < j.curve.step.size(); ++e)
      csv << '"' << algos[j.algorithm].name << "\"," << j.lr_scale << ',' << j.seed << ',' << j.curve.step[e] << ','
          << j.curve.time[e] << ',' << j.curve.mb_per_worker[e] << ',' << j.curve.test_accuracy[e] << ','
          << j.curve.train_loss[e] << '\n';
  };
  for (const Job& j : tuning) write_run(j);
  for (const Job& j : more) write_run(j);
  grid << "algorithm,lr_scale,validation_accuracy,chosen\n";
  for (const Job& j : tuning)
    grid << '"' << algos[j.algorithm].name << "\"," << j.lr_scale << ',' << j.curve.validation_accuracy << ','
         << (&j == best[j.algorithm]) << '\n';
  std::vector<Band> acc(algos.size()), loss(algos.size());
  for (std::size_t a = 0; a < algos.size(); ++a) {
    acc[a] = band(runs[a], &Curve::test_accuracy);
    loss[a] = band(runs[a], &Curve::train_loss);
    const Curve& c = *runs[a][0];  // steps, times and bytes are the same for every seed
    dat << "# " << algos[a].name << "\n";
    for (std::size_t e = 0; e < c.step.size(); ++e)
      dat << c.step[e] << ' ' << c.time[e] << ' ' << acc[a].mean[e] << ' ' << acc[a].lo[e] << ' ' << acc[a].hi[e]
          << ' ' << loss[a].mean[e] << ' ' << loss[a].lo[e] << ' ' << loss[a].hi[e] << '\n';
    dat << "\n\n";
  }
  csv.close();
  grid.close();
  dat.close();

  // Summary table.
  std::printf("\n%-32s %6s %16s %11s %10s %9s %17s\n", "algorithm", "lr x", "test accuracy", "train loss",
              "sim. time", "MB/worker", "time to 80% acc.");
  for (std::size_t a = 0; a < algos.size(); ++a) {
    const Curve& c = *runs[a][0];
    const std::size_t last = c.step.size() - 1;
    double reach = -1;
    for (std::size_t e = 0; e < c.step.size(); ++e)
      if (acc[a].mean[e] >= target_accuracy) {
        reach = c.time[e];
        break;
      }
    char reach_text[32] = "not reached";
    if (reach >= 0) std::snprintf(reach_text, sizeof reach_text, "%.2f s", reach);
    char acc_text[32];
    std::snprintf(acc_text, sizeof acc_text, "%.1f%% [%.1f, %.1f]", 100 * acc[a].mean[last], 100 * acc[a].lo[last],
                  100 * acc[a].hi[last]);
    std::printf("%-32s %6g %16s %11.4f %8.2f s %9.2f %17s\n", algos[a].name, best[a]->lr_scale, acc_text,
                loss[a].mean[last], c.time[last], c.mb_per_worker[last], reach_text);
  }
  std::printf("(test accuracy: mean over %d seeds [min, max]; time to 80%%: of the mean curve, at the recorded "
              "steps)\n",
              seeds);

  // Plots: one curve per algorithm, the spread over seeds shaded.
  std::ofstream gp(out / "plots.gp");
  auto plot = [&](const char* file, int xcol, const char* xlabel, int ycol, const char* ylabel, bool logy) {
    gp << "set terminal pngcairo size 960,600 font ',10'\nset output '" << file << "'\n"
       << (logy ? "set logscale y\nset yrange [*:*]\n" : "unset logscale y\nset yrange [0.7:0.88]\n") << "set grid\nset key "
       << (logy ? "top right" : "bottom right") << "\nset ylabel '" << ylabel << "'\nset xlabel '" << xlabel
       << "'\nset title 'Fashion-MNIST MLP, " << setting.workers << " workers, Dirichlet(" << setting.dirichlet_alpha
       << "), " << network.describe() << "; mean of " << seeds << " seeds, min-max shaded'\nplot ";
    for (std::size_t a = 0; a < algos.size(); ++a)
      gp << (a ? ", " : "") << "'bands.dat' index " << a << " using " << xcol << ':' << ycol + 1 << ':' << ycol + 2
         << " with filledcurves fs transparent solid 0.18 noborder lc " << a + 1 << " notitle, 'bands.dat' index " << a
         << " using " << xcol << ':' << ycol << " with lines lw 2 lc " << a + 1 << " title '" << algos[a].name << "'";
    gp << "\n";
  };
  plot("accuracy_vs_time.png", 2, "simulated wall-clock time (s)", 3, "test accuracy", false);
  plot("accuracy_vs_step.png", 1, "step", 3, "test accuracy", false);
  plot("loss_vs_time.png", 2, "simulated wall-clock time (s)", 6, "training loss", true);
  plot("loss_vs_step.png", 1, "step", 6, "training loss", true);
  gp.close();
  const std::string cmd = "cd '" + out.string() + "' && gnuplot plots.gp";
  const bool plotted = std::system("command -v gnuplot > /dev/null 2>&1") == 0 && std::system(cmd.c_str()) == 0;
  std::printf("\nwrote %s, %s and %s\n", (out / "runs.csv").c_str(), (out / "tuning.csv").c_str(),
              plotted ? ("the plots " + (out / "accuracy_vs_time.png").string() + " and three more").c_str()
                      : "no plots (gnuplot is not installed; cmake/setup-debian.sh installs it)");
  return 0;
}
