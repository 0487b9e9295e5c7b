// The slowmo::data component from a consumer project: read Fashion-MNIST (Debian's
// dataset-fashion-mnist) and score an untrained MLP on it.
#include <slowmo/data.hpp>
#include <slowmo/problems/mlp.hpp>

#include <cstdio>

int main() {
  namespace pb = slowmo::problems;
  const pb::FashionMnist fm = pb::load_fashion_mnist();
  const pb::Mlp model({.widths = {784, 16, 10}});
  auto ws = model.workspace<float>(256);
  const double accuracy = model.accuracy(model.init<float>(7), fm.test, ws);
  std::printf("consumer_data: %lld test images, untrained accuracy %.3f\n", static_cast<long long>(fm.test.size()),
              accuracy);
  return fm.train.size() == 60000 && fm.test.size() == 10000 && accuracy < 0.5 ? 0 : 1;
}
