// Writes a seed corpus for checkpoint_fuzz: valid checkpoints of its optimizer after a few
// steps, prefixed with the harness's mode byte.
#include <cstdio>
#include <fstream>
#include <string>

#include <slowmo/slowmo.hpp>

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : ".";
  static slowmo::SingleWorker solo;
  for (int steps : {0, 1, 3, 5}) {
    slowmo::SlowMo opt(slowmo::Lookahead(slowmo::Adam<float>({.lr = 0.1, .amsgrad = true}), {.k = 2}), solo,
                       {.tau = 4});
    slowmo::Vector<float> x = slowmo::Vector<float>::Ones(3), g = x;
    for (int t = 0; t < steps; ++t) opt.step(x, g);
    const auto bytes = slowmo::checkpoint_bytes(opt);
    for (unsigned char mode : {0, 1}) {
      std::ofstream out(dir + "/seed_" + std::to_string(steps) + "_" + std::to_string(mode), std::ios::binary);
      out.put(char(mode));
      out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
    }
  }
}
