// async_local_sgd: the toy experiment of "Asynchronous Local-SGD Training for Language
// Modeling" (Liu, Douillard et al. 2024; its notebook google-deepmind/asyncdiloco) on the
// simulator. An MLP classifies a mixture of Gaussian mixtures; 4 workers whose steps take
// 0.58, 0.75, 1.51 and 3.33 s train with inner AdamW, and the outer step is
//   - synchronous DiLoCo (every worker waits for the slowest, then Nesterov on the mean),
//   - asynchronous Local SGD with Nesterov on every arrival,
//   - asynchronous with Delayed Nesterov (N = 4 arrivals per momentum update),
//   - asynchronous with Delayed Nesterov and Dynamic Local Updates.
// Every variant gets the same budget of global updates (pushes; 4 per synchronous round).
// Each variant's outer lr is tuned on one grid (seed 0, validation loss at the end), then the
// chosen lr runs with two more seeds; the table and plots report the test set.
// Then Fashion-MNIST (the flagship demo's workload, examples/common/fashion_mnist.hpp) on 16
// workers of which one is 10x slower: synchronous methods wait for it every round.
//
//   async_local_sgd [--quick] [--jobs N] [output-directory]      (default: ./async_out)
#include <slowmo/problems/gaussian_mixture.hpp>
#include <slowmo/problems/split.hpp>
#include <slowmo/slowmo.hpp>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <string>
#include <vector>

#include "common/fashion_mnist.hpp"
#include "common/jobs.hpp"

namespace {

namespace pb = slowmo::problems;
using Problem = pb::Classification<pb::Mlp>;
using Comm = slowmo::sim::Comm;
using slowmo::schedule::Cosine;

constexpr int workers = 4;
const std::vector<double> step_seconds = {0.58, 0.75, 1.51, 3.33};  // the paper's heterogeneity

struct Setting {
  std::int64_t H = 20;                 // inner steps per round (the notebook's default_inner_steps)
  std::int64_t updates = 1600;         // global updates: 400 synchronous rounds of 4 pseudo-gradients
  std::int64_t eval_every = 40;        // updates between evaluations
  std::uint64_t seed = 0;
};

enum class Variant { sync_diloco, async_nesterov, async_dn, async_dn_dylu };
struct VariantInfo {
  Variant id;
  const char* name;
};
const std::vector<VariantInfo> variants = {
    {Variant::sync_diloco, "sync DiLoCo"},
    {Variant::async_nesterov, "async, Nesterov"},
    {Variant::async_dn, "async, Delayed Nesterov"},
    {Variant::async_dn_dylu, "async, DN + DyLU"},
};

struct Data {
  std::shared_ptr<const pb::Dataset> train;
  pb::Dataset validation, test;
};

/// The notebook's data (D 512, 4 classes of 8 clusters, 128,000 samples), and 20,000 fresh
/// draws of the same mixture split into validation (tuning) and test (reporting).
Data make_data(bool quick) {
  pb::GaussianMixtureOptions o;
  o.test_samples = 20000;
  if (quick) o.train_samples = 16000;
  auto gm = pb::make_gaussian_mixture(o);
  std::vector<Eigen::Index> val(10000), test(10000);
  for (Eigen::Index k = 0; k < 10000; ++k) val[std::size_t(k)] = 2 * k, test[std::size_t(k)] = 2 * k + 1;
  Data d;
  d.validation = gm.test.subset(val, "gaussian mixture validation");
  d.test = gm.test.subset(test, "gaussian mixture test");
  d.train = std::make_shared<const pb::Dataset>(std::move(gm.train));
  return d;
}

/// The global model at one evaluation point.
struct Snapshot {
  std::int64_t version = 0;
  double time = 0;
  Eigen::VectorXf x;
};

struct Curve {
  std::vector<std::int64_t> updates;
  std::vector<double> time, test_loss, test_accuracy;
  double validation_loss = 0;
  double mean_staleness = 0;
};

/// The inner AdamW of the notebook (lr 2e-4 with a cosine to 1e-6, weight decay 1e-3, betas
/// (0.9, 0.999)) over `steps` steps.
slowmo::AdamW<float, Cosine> inner(std::int64_t steps) {
  return slowmo::AdamW<float, Cosine>({.lr = 2e-4, .betas = {0.9, 0.999}, .weight_decay = 1e-3},
                                      Cosine{.total_steps = std::max<std::int64_t>(steps, 1), .min_factor = 1e-6 / 2e-4});
}

/// One run: every worker trains; the global model is recorded at every eval_every updates.
Curve run(const Data& data, Variant v, double outer_lr, const Setting& s) {
  const Problem problem(pb::Mlp({.widths = {512, 128, 4}}), data.train, pb::split_iid(*data.train, workers, s.seed),
                        {.batch = 32, .seed = s.seed});
  std::mutex mu;
  std::map<std::int64_t, Snapshot> snapshots;  // by evaluation point
  std::atomic<std::int64_t> staleness{0}, pushes{0};
  auto record = [&](std::int64_t version, double time, const Eigen::VectorXf& x) {
    const std::lock_guard lock(mu);
    const std::int64_t point = version / s.eval_every;
    if (!snapshots.contains(point)) snapshots[point] = {version, time, x};
  };
  // Each worker's share of the steps over the run: synchronous, the same for all; asynchronous,
  // in proportion to its speed (it never waits).
  double total_speed = 0;
  for (double t : step_seconds) total_speed += 1 / t;
  const std::int64_t budget = s.updates * s.H;  // local steps if every update carried H of them
  slowmo::sim::run({.workers = workers, .slowdown = step_seconds}, [&](Comm& comm) {
    const int r = comm.rank();
    Eigen::VectorXf x = problem.init<float>(s.seed), g(problem.dim());
    if (v == Variant::sync_diloco) {
      auto opt = slowmo::outer_loop(inner(budget / workers), comm, {.tau = s.H},
                                    slowmo::outer::HeavyBall<float>({.lr = outer_lr, .momentum = 0.9, .nesterov = true}));
      slowmo::start(opt, x);
      if (r == 0) record(0, 0, x);
      for (std::int64_t t = 1; opt.outer_steps() * workers < s.updates; ++t) {
        problem.sample_gradient(r, t, x, g);
        comm.compute(1.0);
        opt.step(x, g);
        if (r == 0 && t % s.H == 0) record(opt.outer_steps() * workers, comm.now(), x);
      }
      return;
    }
    const auto my_steps = std::int64_t(double(budget) * (1 / step_seconds[std::size_t(r)]) / total_speed);
    slowmo::DynamicLocalUpdates dylu{};
    if (v == Variant::async_dn_dylu) {
      dylu.enabled = true;
      for (double t : step_seconds) dylu.speeds.push_back(1 / t);
    }
    const std::int64_t N = v == Variant::async_nesterov ? 1 : workers;
    auto opt = slowmo::AsyncLocalSgd(inner(my_steps), comm, {.H = s.H, .dylu = dylu},
                                     slowmo::outer::DelayedNesterov<float>({.lr = outer_lr, .momentum = 0.9, .N = N}));
    slowmo::start(opt, x);
    if (r == 0) record(0, 0, x);
    std::int64_t seen = opt.pushes();
    for (std::int64_t t = 1; opt.last_pull().version < s.updates; ++t) {
      problem.sample_gradient(r, t, x, g);
      comm.compute(1.0);
      opt.step(x, g);
      if (opt.pushes() != seen) {  // a round ended: x is the global model at the version pulled
        seen = opt.pushes();
        record(opt.last_pull().version, comm.now(), x);
      }
    }
    staleness += opt.staleness_sum();
    pushes += opt.pushes();
  });
  Curve c;
  for (const auto& [point, snap] : snapshots) {
    const slowmo::Vector<float> x(snap.x);
    c.updates.push_back(snap.version);
    c.time.push_back(snap.time);
    c.test_loss.push_back(problem.loss(x, data.test));
    c.test_accuracy.push_back(problem.accuracy(x, data.test));
    c.validation_loss = problem.loss(x, data.validation);  // (the last point's)
  }
  c.mean_staleness = pushes > 0 ? double(staleness) / double(pushes) : 0.0;
  return c;
}

struct Job {
  std::size_t variant;
  double lr;
  std::uint64_t seed;
  Curve curve{};
};

/// Fashion-MNIST, 16 workers, worker 15 ten times slower. The synchronous rows use the flagship
/// demo's tuned base lr (DiLoCo x4, SlowMo x0.5: README, "The demo"); the asynchronous rows
/// use DiLoCo's inner AdamW at that lr, and their outer lr is tuned here on `grid` (validation
/// accuracy, seed 0). Every row has the same budget of global updates: 50 synchronous rounds
/// of 16 pseudo-gradients = 800 pushes.
struct StragglerRow {
  std::string name;
  double outer_lr = 0;
  double accuracy = 0, validation = 0, time = 0, mb = 0;
  std::vector<double> curve_time{}, curve_accuracy{};
};

StragglerRow straggler_async(const example::Workload& w, const example::Setting& s, const slowmo::sim::Network& net,
                             bool dylu, double outer_lr) {
  const example::Problem problem = example::make_problem(w, s);
  const std::int64_t H = 12, updates = std::int64_t(s.workers) * s.steps / H;
  std::mutex mu;
  std::map<std::int64_t, Snapshot> snapshots;
  std::vector<double> mb(std::size_t(s.workers));
  std::vector<double> speeds;
  for (double f : s.slowdown) speeds.push_back(1 / f);
  slowmo::sim::run({.workers = s.workers, .network = net, .slowdown = s.slowdown}, [&](Comm& comm) {
    const int r = comm.rank();
    const auto my_steps = std::int64_t(double(s.steps) * double(s.workers) * speeds[std::size_t(r)] /
                                       std::accumulate(speeds.begin(), speeds.end(), 0.0));
    auto inner = slowmo::AdamW<float, Cosine>({.lr = 4e-3, .betas = {0.9, 0.95}, .weight_decay = 0.0},
                                              Cosine{.total_steps = std::max<std::int64_t>(my_steps, 1), .min_factor = 0.02});
    slowmo::DynamicLocalUpdates d{};
    if (dylu) d = {.enabled = true, .speeds = speeds};
    auto opt = slowmo::AsyncLocalSgd(std::move(inner), comm, {.H = H, .dylu = d},
                                     slowmo::outer::DelayedNesterov<float>(
                                         {.lr = outer_lr, .momentum = 0.9, .N = s.workers}));
    Eigen::VectorXf x = problem.init<float>(s.seed), g(problem.dim());
    slowmo::start(opt, x);
    std::int64_t seen = 0;
    for (std::int64_t t = 1; opt.last_pull().version < updates; ++t) {
      problem.sample_gradient(r, t, x, g);
      comm.compute(s.compute_seconds);
      opt.step(x, g);
      if (opt.pushes() != seen) {
        seen = opt.pushes();
        const std::lock_guard lock(mu);
        const std::int64_t point = opt.last_pull().version / 80;
        if (!snapshots.contains(point)) snapshots[point] = {opt.last_pull().version, comm.now(), x};
      }
    }
    mb[std::size_t(r)] = double(comm.bytes_sent()) / 1e6;
  });
  StragglerRow row{.name = dylu ? "async, DN + DyLU" : "async, Delayed Nesterov", .outer_lr = outer_lr};
  for (const auto& [point, snap] : snapshots) {
    row.curve_time.push_back(snap.time);
    row.curve_accuracy.push_back(problem.accuracy(slowmo::Vector<float>(snap.x), w.test));
  }
  const Snapshot& last = snapshots.rbegin()->second;
  row.accuracy = row.curve_accuracy.back();
  row.validation = problem.accuracy(slowmo::Vector<float>(last.x), w.validation);
  row.time = last.time;
  row.mb = std::accumulate(mb.begin(), mb.end(), 0.0) / double(s.workers);
  return row;
}

void straggler_experiment(bool quick, int threads, const std::filesystem::path& out) {
  example::WorkloadOptions wo;
  example::Setting s;
  if (quick) {
    wo.train_limit = 12000;
    wo.test_limit = 2000;
    s.steps = 60;
    s.eval_every = 20;
  }
  const example::Workload w = example::fashion_mnist_workload(wo);
  s.slowdown.assign(std::size_t(s.workers), 1.0);
  s.slowdown.back() = 10.0;
  const slowmo::sim::Network net{.latency = 100e-6, .bandwidth = 125e6};
  const std::vector<double> grid = quick ? std::vector<double>{0.4} : std::vector<double>{0.1, 0.2, 0.4, 0.7};
  std::printf("\nFashion-MNIST MLP 784-64-10, 16 workers, worker 15 10x slower (1 ms compute per step, 10 ms for it), "
              "%s; %lld pushes for every row\n",
              net.describe().c_str(), static_cast<long long>(s.workers * s.steps / 12));
  std::vector<StragglerRow> rows(2);
  std::vector<std::function<void()>> jobs;
  // The synchronous rows, at the flagship demo's tuned lr.
  const std::pair<example::Algorithm, double> sync[] = {{example::Algorithm::diloco, 4.0},
                                                        {example::Algorithm::slowmo_local_sgd, 0.5}};
  for (std::size_t k = 0; k < 2; ++k)
    jobs.push_back([&, k] {
      const example::Curve c = example::run_simulated(w, s, sync[k].first, sync[k].second, net);
      StragglerRow& row = rows[k];
      row.name = example::find_algorithm(sync[k].first == example::Algorithm::diloco ? "diloco" : "slowmo_local_sgd").name;
      row.outer_lr = sync[k].first == example::Algorithm::diloco ? 0.7 : 1.0;
      row.accuracy = c.test_accuracy.back();
      row.validation = c.validation_accuracy;
      row.time = c.time.back();
      row.mb = c.mb_per_worker.back();
      row.curve_time = c.time;
      row.curve_accuracy = c.test_accuracy;
    });
  std::vector<StragglerRow> tuned(2 * grid.size());
  for (std::size_t k = 0; k < tuned.size(); ++k)
    jobs.push_back([&, k] { tuned[k] = straggler_async(w, s, net, k >= grid.size(), grid[k % grid.size()]); });
  example::parallel_runs(jobs.size(), threads, [&](std::size_t i) { jobs[i](); }, "straggler");
  for (std::size_t v = 0; v < 2; ++v) {  // the best outer lr of each asynchronous variant
    const StragglerRow* best = nullptr;
    for (std::size_t k = v * grid.size(); k < (v + 1) * grid.size(); ++k)
      if (!best || tuned[k].validation > best->validation) best = &tuned[k];
    rows.push_back(*best);
  }
  std::printf("%-32s %9s %14s %11s %11s\n", "algorithm", "outer lr", "test accuracy", "sim. time", "MB/worker");
  std::ofstream dat(out / "straggler.dat");
  for (const auto& r : rows) {
    std::printf("%-32s %9g %13.1f%% %9.2f s %11.2f\n", r.name.c_str(), r.outer_lr, 100 * r.accuracy, r.time, r.mb);
    dat << "# " << r.name << "\n";
    for (std::size_t e = 0; e < r.curve_time.size(); ++e) dat << r.curve_time[e] << ' ' << r.curve_accuracy[e] << '\n';
    dat << "\n\n";
  }
  std::printf("(MB/worker: sent, as in the demo; an asynchronous worker also receives one model per pull; seed 0)\n");
  dat.close();
  std::ofstream gp(out / "straggler.gp");
  gp << "set terminal pngcairo size 900,560 font ',10'\nset output 'straggler_accuracy_vs_time.png'\nset grid\n"
     << "set yrange [0.6:0.88]\nset key bottom right\nset ylabel 'test accuracy'\nset xlabel 'simulated time (s)'\n"
     << "set title 'Fashion-MNIST, 16 workers, one 10x straggler (seed 0)'\nplot ";
  for (std::size_t k = 0; k < rows.size(); ++k)
    gp << (k ? ", " : "") << "'straggler.dat' index " << k << " using 1:2 with lines lw 2 title '" << rows[k].name << "'";
  gp << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  const example::RunArgs args = example::parse_run_args(argc, argv, "async_out");
  const fs::path& out = args.out;
  const bool quick = args.quick;
  const int threads = args.threads;
  Setting setting;
  std::vector<double> grid = {0.1, 0.2, 0.4, 0.7};
  int seeds = 3;
  if (quick) {
    setting.updates = 160;
    setting.eval_every = 40;
    grid = {0.4};
    seeds = 1;
  }
  const Data data = make_data(quick);
  std::printf("Gaussian mixture (D 512, 4 classes x 8 clusters, %lld samples), MLP 512-128-4; %d workers at "
              "0.58/0.75/1.51/3.33 s per step; inner AdamW; H %lld; %lld global updates; outer lr grid {",
              static_cast<long long>(data.train->size()), workers, static_cast<long long>(setting.H),
              static_cast<long long>(setting.updates));
  for (std::size_t k = 0; k < grid.size(); ++k) std::printf("%s%g", k ? ", " : "", grid[k]);
  std::printf("}, momentum 0.9; %d seeds\n", seeds);

  auto f = [&](const Job& j) {
    Setting s = setting;
    s.seed = j.seed;
    return run(data, variants[j.variant].id, j.lr, s);
  };
  std::vector<Job> tuning;
  for (std::size_t v = 0; v < variants.size(); ++v)
    for (double lr : grid) tuning.push_back({v, lr, 0});
  example::parallel_runs(tuning.size(), threads, [&](std::size_t i) { tuning[i].curve = f(tuning[i]); }, "tuning");
  std::vector<const Job*> best(variants.size(), nullptr);
  for (const Job& j : tuning)
    if (!best[j.variant] || j.curve.validation_loss < best[j.variant]->curve.validation_loss) best[j.variant] = &j;
  std::vector<Job> more;
  for (std::size_t v = 0; v < variants.size(); ++v)
    for (std::uint64_t seed = 1; seed < std::uint64_t(seeds); ++seed) more.push_back({v, best[v]->lr, seed});
  example::parallel_runs(more.size(), threads, [&](std::size_t i) { more[i].curve = f(more[i]); }, "seeds");

  std::ofstream csv(out / "runs.csv"), dat(out / "curves.dat");
  csv << "variant,outer_lr,seed,updates,sim_time_s,test_loss,test_accuracy\n";
  for (const auto* list : {&tuning, &more})
    for (const Job& j : *list)
      for (std::size_t e = 0; e < j.curve.updates.size(); ++e)
        csv << '"' << variants[j.variant].name << "\"," << j.lr << ',' << j.seed << ',' << j.curve.updates[e] << ','
            << j.curve.time[e] << ',' << j.curve.test_loss[e] << ',' << j.curve.test_accuracy[e] << '\n';

  std::printf("\n%-26s %9s %22s %12s %12s %10s\n", "variant", "outer lr", "test loss [min, max]", "accuracy",
              "sim. time", "staleness");
  for (std::size_t v = 0; v < variants.size(); ++v) {
    std::vector<const Curve*> runs{&best[v]->curve};
    for (const Job& j : more)
      if (j.variant == v) runs.push_back(&j.curve);
    // The seeds' curves may record slightly different versions: report each at its last point.
    double sum = 0, lo = 1e300, hi = -1e300, acc = 0, time = 0, stale = 0;
    for (const Curve* c : runs) {
      sum += c->test_loss.back();
      lo = std::min(lo, c->test_loss.back());
      hi = std::max(hi, c->test_loss.back());
      acc += c->test_accuracy.back();
      time += c->time.back();
      stale += c->mean_staleness;
    }
    const double n = double(runs.size());
    char loss_text[48];
    std::snprintf(loss_text, sizeof loss_text, "%.4f [%.4f, %.4f]", sum / n, lo, hi);
    std::printf("%-26s %9g %22s %11.1f%% %10.0f s %10.2f\n", variants[v].name, best[v]->lr, loss_text, 100 * acc / n,
                time / n, stale / n);
    const Curve& c = best[v]->curve;  // seed 0's curve for the plots
    dat << "# " << variants[v].name << "\n";
    for (std::size_t e = 0; e < c.updates.size(); ++e)
      dat << c.updates[e] << ' ' << c.time[e] << ' ' << c.test_loss[e] << ' ' << c.test_accuracy[e] << '\n';
    dat << "\n\n";
  }
  csv.close();
  dat.close();

  std::ofstream gp(out / "plots.gp");
  auto plot = [&](const char* file, int xcol, const char* xlabel) {
    gp << "set terminal pngcairo size 900,560 font ',10'\nset output '" << file << "'\nset grid\nset yrange [1.22:1.39]\n"
       << "set key top right\nset ylabel 'test loss'\nset xlabel '" << xlabel
       << "'\nset title 'Asynchronous Local SGD, Gaussian mixture, 4 workers at 0.58/0.75/1.51/3.33 s per step (seed 0)'\nplot ";
    for (std::size_t v = 0; v < variants.size(); ++v)
      gp << (v ? ", " : "") << "'curves.dat' index " << v << " using " << xcol << ":3 with lines lw 2 title '"
         << variants[v].name << "'";
    gp << "\n";
  };
  plot("loss_vs_updates.png", 1, "global updates (pushes; 4 per synchronous round)");
  plot("loss_vs_time.png", 2, "simulated time (s)");
  gp.close();
  straggler_experiment(quick, threads, out);
  const std::string cmd = "cd '" + out.string() + "' && gnuplot plots.gp && gnuplot straggler.gp";
  const bool plotted = std::system("command -v gnuplot > /dev/null 2>&1") == 0 && std::system(cmd.c_str()) == 0;
  std::printf("\nwrote %s%s\n", (out / "runs.csv").c_str(), plotted ? " and three plots" : " (no gnuplot: no plots)");
  return 0;
}
