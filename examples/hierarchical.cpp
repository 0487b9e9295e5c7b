// hierarchical: worker groups on a two-level cluster. The flagship workload (an MLP on
// Fashion-MNIST, Dirichlet(0.5) label skew, examples/common/fashion_mnist.hpp) on 16 simulated
// workers in 4 nodes of 4, 100 Gbit/s and 5 us inside a node, 1 Gbit/s and 100 us between
// nodes. Compared, with the same steps, batch, compute model and base optimizer (SGD,
// momentum 0.9, cosine decay):
//   - AR-SGD: the gradient all-reduced over everyone at every step (flat);
//   - SlowMo (tau 12): exact averaging over everyone every 12 steps, then slow momentum (flat);
//   - hierarchical Local SGD: every step inside each node, everyone every 12 steps;
//   - hierarchical SlowMo: the same hierarchy as SlowMo's base, SlowMo's outer step every 12.
// Each algorithm's lr multiplier is tuned on a grid on the validation split (seed 0); the
// chosen one then runs with more seeds and the table reports the test set (mean [min, max]).
//
//   hierarchical [--quick] [--jobs N] [output-directory]      (default: ./hierarchical_out)
//
// Writes runs.csv and, with gnuplot, loss_vs_time.png and accuracy_vs_time.png.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/fashion_mnist.hpp"
#include "common/jobs.hpp"

namespace {

enum class Method { ar_sgd, slowmo, hierarchical_local_sgd, hierarchical_slowmo };
struct MethodInfo {
  Method id;
  const char* name;
};
const MethodInfo methods[] = {{Method::ar_sgd, "AR-SGD (flat)"},
                              {Method::slowmo, "SlowMo, tau 12 (flat)"},
                              {Method::hierarchical_local_sgd, "hier. Local SGD (node 1, all 12)"},
                              {Method::hierarchical_slowmo, "hier. SlowMo (node 1, all 12)"}};
constexpr int nodes = 4, per_node = 4;
constexpr std::int64_t tau = 12;

/// The cluster: the simulator's two-level network.
slowmo::sim::Options cluster(const example::Setting& s) {
  return {.workers = s.workers,
          .network = {.latency = 5e-6, .bandwidth = 12.5e9},  // inside a node: 100 Gbit/s
          .workers_per_node = per_node,
          .between_nodes = {.latency = 100e-6, .bandwidth = 125e6}};  // between nodes: 1 Gbit/s
}

/// Calls f(make) with the factory of method `m`: make(comm) returns this worker's optimizer.
template <class F>
void with_method(Method m, double lr_scale, int steps, F&& f) {
  using T = float;
  using slowmo::schedule::Cosine;
  const Cosine decay{.total_steps = steps, .min_factor = 0.02};
  auto sgd = [=] { return slowmo::Sgd<T, Cosine>({.lr = 0.1 * lr_scale, .momentum = 0.9}, decay); };
  // Inside each node every step, everyone every tau steps.
  const slowmo::HierarchicalLocalSgdOptions hierarchy{
      .levels = {{.period = 1, .group_size = per_node}, {.period = tau, .group_size = nodes * per_node}}};
  switch (m) {
    case Method::ar_sgd: return f([=](auto& c) { return slowmo::GradientAllReduce(sgd(), c); });
    case Method::slowmo:
      return f([=](auto& c) { return slowmo::SlowMo(sgd(), c, {.tau = tau, .alpha = 1.0, .beta = 0.7}); });
    case Method::hierarchical_local_sgd:
      return f([=](auto& c) { return slowmo::HierarchicalLocalSgd(sgd(), c, hierarchy); });
    case Method::hierarchical_slowmo:
      return f([=](auto& c) {
        return slowmo::SlowMo(slowmo::HierarchicalLocalSgd(sgd(), c, hierarchy), c,
                              {.tau = tau, .alpha = 1.0, .beta = 0.7});
      });
  }
}

struct Job {
  std::size_t method;
  double lr_scale;
  std::uint64_t seed;
  example::Curve curve{};
};

}  // namespace

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  const example::RunArgs args = example::parse_run_args(argc, argv, "hierarchical_out");
  std::vector<double> lr_grid = {0.25, 0.5, 1.0, 2.0, 4.0};
  int seeds = 3;
  example::Setting setting;
  example::WorkloadOptions wo;
  if (args.quick) {  // a smoke run of the same pipeline (the test suite's)
    lr_grid = {1.0};
    seeds = 1;
    setting.steps = 48;
    setting.eval_every = 24;
    wo.train_limit = 8000;
    wo.test_limit = 1000;
  }
  const example::Workload w = example::fashion_mnist_workload(wo);
  const slowmo::sim::Options sim = cluster(setting);
  std::printf("Fashion-MNIST MLP on %d simulated workers in %d nodes of %d: %s inside a node, %s between nodes; "
              "%.1f ms compute per step; %d steps of batch %d; lr grid x{",
              setting.workers, nodes, per_node, sim.network.describe().c_str(), sim.between_nodes.describe().c_str(),
              setting.compute_seconds * 1e3, setting.steps, setting.batch);
  for (std::size_t k = 0; k < lr_grid.size(); ++k) std::printf("%s%g", k ? ", " : "", lr_grid[k]);
  std::printf("} of SGD 0.1; %d seeds\n", seeds);

  auto run = [&](const Job& j) {
    example::Setting s = setting;
    s.seed = j.seed;
    const example::Problem problem = example::make_problem(w, s);
    std::vector<example::Trace> traces(std::size_t(s.workers));
    with_method(methods[j.method].id, j.lr_scale, s.steps, [&](auto make) {
      slowmo::sim::run(cluster(s), [&](slowmo::sim::Comm& c) {
        traces[std::size_t(c.rank())] = example::train(c, problem, make, s);
      });
    });
    return example::evaluate(problem, w, traces);
  };

  const std::size_t n_methods = std::size(methods);
  std::vector<Job> tuning;
  for (std::size_t a = 0; a < n_methods; ++a)
    for (double scale : lr_grid) tuning.push_back({a, scale, 0});
  example::parallel_runs(tuning.size(), args.threads, [&](std::size_t i) { tuning[i].curve = run(tuning[i]); },
                         "tuning");
  std::vector<const Job*> best(n_methods, nullptr);
  for (const Job& j : tuning)
    if (!best[j.method] || j.curve.validation_accuracy > best[j.method]->curve.validation_accuracy) best[j.method] = &j;
  std::vector<Job> more;
  for (std::size_t a = 0; a < n_methods; ++a)
    for (std::uint64_t seed = 1; seed < std::uint64_t(seeds); ++seed) more.push_back({a, best[a]->lr_scale, seed});
  example::parallel_runs(more.size(), args.threads, [&](std::size_t i) { more[i].curve = run(more[i]); }, "seeds");

  std::vector<std::vector<const example::Curve*>> runs(n_methods);
  for (std::size_t a = 0; a < n_methods; ++a) runs[a].push_back(&best[a]->curve);
  for (const Job& j : more) runs[j.method].push_back(&j.curve);

  fs::create_directories(args.out);
  std::ofstream csv(args.out / "runs.csv"), dat(args.out / "mean.dat");
  csv << "method,lr_scale,seed,step,sim_time_s,mb_sent_per_worker,test_accuracy,train_loss\n";
  auto write_run = [&](const Job& j) {
    for (std::size_t e = 0; e < j.curve.step.size(); ++e)
      csv << '"' << methods[j.method].name << "\"," << j.lr_scale << ',' << j.seed << ',' << j.curve.step[e] << ','
          << j.curve.time[e] << ',' << j.curve.mb_per_worker[e] << ',' << j.curve.test_accuracy[e] << ','
          << j.curve.train_loss[e] << '\n';
  };
  for (const Job& j : tuning) write_run(j);
  for (const Job& j : more) write_run(j);

  std::printf("\n%-34s %5s %18s %11s %10s %10s\n", "method", "lr x", "test accuracy", "train loss", "sim. time",
              "MB/worker");
  for (std::size_t a = 0; a < n_methods; ++a) {
    const auto& rs = runs[a];
    const std::size_t last = rs[0]->step.size() - 1;
    double acc = 0, lo = 1, hi = 0, loss = 0;
    for (const example::Curve* c : rs) {
      acc += c->test_accuracy[last] / double(rs.size());
      lo = std::min(lo, c->test_accuracy[last]);
      hi = std::max(hi, c->test_accuracy[last]);
      loss += c->train_loss[last] / double(rs.size());
    }
    char acc_text[40];
    std::snprintf(acc_text, sizeof acc_text, "%.1f%% [%.1f, %.1f]", 100 * acc, 100 * lo, 100 * hi);
    std::printf("%-34s %5g %18s %11.4f %8.3f s %10.2f\n", methods[a].name, best[a]->lr_scale, acc_text, loss,
                rs[0]->time[last], rs[0]->mb_per_worker[last]);
    dat << "# " << methods[a].name << "\n";
    for (std::size_t e = 0; e <= last; ++e) {
      double ma = 0, ml = 0;
      for (const example::Curve* c : rs) ma += c->test_accuracy[e] / double(rs.size()), ml += c->train_loss[e] / double(rs.size());
      dat << rs[0]->time[e] << ' ' << ma << ' ' << ml << '\n';
    }
    dat << "\n\n";
  }
  std::printf("(test accuracy: mean over %d seeds [min, max]; simulated time and MB sent per worker are the same for "
              "every seed)\n",
              seeds);
  csv.close();
  dat.close();

  std::ofstream gp(args.out / "plots.gp");
  auto plot = [&](const char* file, int col, const char* ylabel, bool logy) {
    gp << "set terminal pngcairo size 960,600 font ',10'\nset output '" << file << "'\n"
       << (logy ? "set logscale y\n" : "unset logscale y\n") << "set grid\nset key " << (logy ? "top right" : "bottom right")
       << "\nset xlabel 'simulated wall-clock time (s)'\nset ylabel '" << ylabel
       << "'\nset title 'Fashion-MNIST MLP, 4 x 4 workers, 100 Gbit/s inside nodes, 1 Gbit/s between; mean of "
       << seeds << " seeds'\nplot ";
    for (std::size_t a = 0; a < n_methods; ++a)
      gp << (a ? ", " : "") << "'mean.dat' index " << a << " using 1:" << col << " with lines lw 2 title '"
         << methods[a].name << "'";
    gp << "\n";
  };
  plot("loss_vs_time.png", 3, "training loss", true);
  plot("accuracy_vs_time.png", 2, "test accuracy", false);
  gp.close();
  const std::string cmd = "cd '" + args.out.string() + "' && gnuplot plots.gp";
  const bool plotted = std::system("command -v gnuplot > /dev/null 2>&1") == 0 && std::system(cmd.c_str()) == 0;
  std::printf("\nwrote %s%s\n", (args.out / "runs.csv").c_str(),
              plotted ? (" and " + (args.out / "loss_vs_time.png").string() + ", accuracy_vs_time.png").c_str()
                      : " (no plots: gnuplot is not installed)");
  return 0;
}
