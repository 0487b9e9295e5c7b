// theory: the five convergence-theory toy problems, measured with the library's algorithms
// on the simulator and compared with their closed forms. Prints a table and writes
// theory.csv and theory.png (predicted curves, measured points).
//
//   theory [output-directory]        (default: ./theory_out)
//
// Near critical damping (a double root of the outer recurrence) the error decays like
// t r^t, and a finite window measures a rate slightly above r: expect a few percent there.
#include <slowmo/problems/quadratic.hpp>
#include <slowmo/slowmo.hpp>
#include <slowmo/theory/closed_forms.hpp>
#include <slowmo/theory/experiments.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace th = slowmo::theory;
namespace pb = slowmo::problems;

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  const fs::path out = argc > 1 ? argv[1] : "theory_out";
  fs::create_directories(out);
  std::ofstream csv(out / "theory.csv");
  csv << "experiment,x,predicted,measured,standard_error\n";
  auto row = [&](const char* experiment, double x, double predicted, double measured, double se) {
    csv << experiment << ',' << x << ',' << predicted << ',' << measured << ',' << se << '\n';
    std::printf("  %-12s x = %-6g predicted %-12.6g measured %-12.6g (+- %.2g)\n", experiment, x, predicted, measured,
                se);
  };

  const double eta = 0.1, s = 1.0;
  std::printf("1. stationary loss of Local SGD's average iterate (4 workers, 16 dims) against H\n");
  const pb::Quadratic noisy({.workers = 4, .dim = 16, .lambda_min = 0.5, .lambda_max = 2.0, .heterogeneity = 0,
                             .noise = s, .seed = 3});
  for (int H : {1, 2, 4, 8, 16, 32}) {
    const auto m = th::local_sgd_stationary_loss(noisy, eta, H, 500, 30000);
    row("stationary", H, th::local_sgd_stationary_loss(eta, s, 4, noisy.eigenvalues(0)), m.mean, m.standard_error);
  }

  std::printf("2. client drift: where K local steps converge, against K (true minimiser at K = 1)\n");
  const std::vector<double> a{0.5, 1.0, 2.0, 4.0}, c{1.0, -2.0, 3.0, 0.5};
  std::vector<Eigen::VectorXd> av, cv;
  for (std::size_t i = 0; i < a.size(); ++i)
    av.push_back(Eigen::VectorXd::Constant(1, a[i])), cv.push_back(Eigen::VectorXd::Constant(1, c[i]));
  const pb::Quadratic drift(av, cv);
  for (int K : {1, 2, 5, 10, 20, 40}) {
    const auto x0 = th::slowmo_outer_iterates(drift, eta, K, {.alpha = 1.0, .beta = 0.5}, 1500, 0.0);
    row("drift", K, th::client_drift_fixed_point(eta, K, a, c), x0.back(), 0);
  }

  std::printf("3. outer contraction per round of SlowMo (K = 5, alpha = 0.5) against beta, heavy ball and Nesterov\n");
  const double h = th::outer_contraction_gap(eta, 5, a), x_hat = th::client_drift_fixed_point(eta, 5, a, c);
  for (bool nesterov : {false, true})
    for (double beta : {0.0, 0.2, 0.4, 0.6, 0.8, 0.9}) {
      const auto x0 = th::slowmo_outer_iterates(drift, eta, 5, {.alpha = 0.5, .beta = beta, .nesterov = nesterov},
                                                3000, 10.0);
      std::vector<double> e;
      for (double v : x0) e.push_back(v - x_hat);
      row(nesterov ? "rate_nesterov" : "rate_heavyball", beta, th::outer_rate(0.5, beta, h, nesterov),
          th::measured_rate(e), 0);
    }

  std::printf("4. Lookahead (k = 5): stationary variance relative to SGD against alpha\n");
  const pb::Quadratic one({.workers = 1, .dim = 256, .lambda_min = 1, .lambda_max = 1, .heterogeneity = 0,
                           .noise = s, .seed = 5});
  for (double alpha : {0.1, 0.3, 0.5, 0.7, 0.9}) {
    const auto m = th::lookahead_variance_ratio(one, eta, 5, alpha, 100, 2000);
    row("lookahead", alpha, th::lookahead_variance_ratio(alpha, 5, 1 - eta), m.mean, m.standard_error);
  }

  std::printf("5. consensus distance k local steps after an average (4 workers, H = 16)\n");
  const pb::Quadratic cons({.workers = 4, .dim = 256, .lambda_min = 1, .lambda_max = 1, .heterogeneity = 0,
                            .noise = s, .seed = 9});
  const auto d = th::consensus_distances(cons, eta, 16, 150);
  for (int k = 1; k < 16; ++k)
    row("consensus", k, th::consensus_distance(eta, s, 4, 1 - eta, k), d[std::size_t(k - 1)].mean,
        d[std::size_t(k - 1)].standard_error);
  csv.close();

  std::ofstream gp(out / "theory.gp");
  gp << "set terminal pngcairo size 1400,800 font ',10'\nset output 'theory.png'\nset datafile separator ','\n"
        "set multiplot layout 2,3 title 'Closed forms (lines) against measurements (points)'\nset grid\nset key top left\n";
  auto panel = [&](const char* title, const char* xlabel, const char* experiment, bool errors, const char* extra = "") {
    gp << extra << "set title '" << title << "'\nset xlabel '" << xlabel << "'\nplot 'theory.csv' using "
       << "(strcol(1) eq '" << experiment << "' ? $2 : 1/0):3 with lines lw 2 title 'predicted', '' using (strcol(1) eq '"
       << experiment << "' ? $2 : 1/0):4" << (errors ? ":5 with yerrorbars" : " with points pt 7") << " title 'measured'\n"
       << "unset logscale\n";
  };
  panel("1. stationary loss, Local SGD", "H", "stationary", true, "set logscale x 2\nset yrange [0:0.15]\n");
  gp << "set autoscale y\n";
  panel("2. client-drift fixed point", "local steps K", "drift", false, "set logscale x 2\n");
  panel("3. outer rate, heavy ball", "beta", "rate_heavyball", false);
  panel("3. outer rate, Nesterov", "beta", "rate_nesterov", false);
  panel("4. Lookahead variance / SGD variance", "alpha", "lookahead", true);
  panel("5. consensus distance", "local steps since the average", "consensus", true, "set yrange [0:0.045]\n");
  gp << "unset multiplot\n";
  gp.close();
  const std::string cmd = "cd '" + out.string() + "' && gnuplot theory.gp";
  const bool plotted = std::system("command -v gnuplot > /dev/null 2>&1") == 0 && std::system(cmd.c_str()) == 0;
  std::printf("wrote %s%s\n", (out / "theory.csv").c_str(),
              plotted ? (", " + (out / "theory.png").string()).c_str() : " (no plot: gnuplot is not installed)");
}
