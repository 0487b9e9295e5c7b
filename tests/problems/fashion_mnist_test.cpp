// The real Fashion-MNIST from Debian's package dataset-fashion-mnist: sizes, the balanced
// classes, the first labels and pixel sums (read independently, with Python's gzip module,
// from the same files), the stratified holdout on it, and the messages when the files are
// not there. No skip: without the package this fails with the message saying what to install.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include <slowmo/problems/fashion_mnist.hpp>
#include <slowmo/problems/split.hpp>

namespace {

namespace fs = std::filesystem;
namespace problems = slowmo::problems;

/// Loaded once for the program (the training images take about a second).
const problems::FashionMnist& fashion_mnist() {
  static const problems::FashionMnist fm = problems::load_fashion_mnist();
  return fm;
}

std::vector<Eigen::Index> class_counts(const problems::Dataset& ds) {
  std::vector<Eigen::Index> n(std::size_t(ds.classes));
  for (const auto y : ds.y) ++n[std::size_t(y)];
  return n;
}

std::vector<std::int32_t> first_labels(const problems::Dataset& ds, std::size_t k) {
  return std::vector<std::int32_t>(ds.y.begin(), ds.y.begin() + std::ptrdiff_t(k));
}

}  // namespace

TEST_CASE("Fashion-MNIST: sizes, balanced classes, first labels, pixels in [0, 1]") {
  const auto& fm = fashion_mnist();
  CHECK(fm.train.size() == 60000);
  CHECK(fm.test.size() == 10000);
  CHECK(fm.train.features() == 784);
  CHECK(fm.test.features() == 784);
  CHECK(fm.train.classes == 10);
  CHECK(fm.train.name == "fashion-mnist train");
  CHECK(fm.test.name == "fashion-mnist test");
  CHECK_NOTHROW(fm.train.validate());
  CHECK_NOTHROW(fm.test.validate());
  CHECK(class_counts(fm.train) == std::vector<Eigen::Index>(10, 6000));
  CHECK(class_counts(fm.test) == std::vector<Eigen::Index>(10, 1000));
  CHECK(first_labels(fm.train, 10) == std::vector<std::int32_t>{9, 0, 0, 3, 0, 2, 7, 2, 5, 5});
  CHECK(first_labels(fm.test, 10) == std::vector<std::int32_t>{9, 2, 1, 1, 6, 1, 4, 6, 5, 7});
  CHECK(fm.train.X.minCoeff() == 0.0f);
  CHECK(fm.train.X.maxCoeff() == 1.0f);
  CHECK(fm.test.X.minCoeff() >= 0.0f);
  CHECK(fm.test.X.maxCoeff() <= 1.0f);
  // The bytes of the first image of each set sum to 76247 and 33456.
  CHECK(fm.train.X.col(0).cast<double>().sum() * 255 == doctest::Approx(76247).epsilon(1e-6));
  CHECK(fm.test.X.col(0).cast<double>().sum() * 255 == doctest::Approx(33456).epsilon(1e-6));
}

TEST_CASE("Fashion-MNIST: the class names") {
  CHECK(problems::fashion_mnist_classes.size() == 10);
  CHECK(problems::fashion_mnist_classes[0] == "T-shirt/top");
  CHECK(problems::fashion_mnist_classes[6] == "Shirt");
  CHECK(problems::fashion_mnist_classes[9] == "Ankle boot");
}

TEST_CASE("Fashion-MNIST: a stratified holdout of 10,000 takes 1,000 of every class") {
  const auto& train = fashion_mnist().train;
  const problems::Holdout h = problems::holdout(train, 10000, 3);
  CHECK(class_counts(h.validation) == std::vector<Eigen::Index>(10, 1000));
  CHECK(class_counts(h.train) == std::vector<Eigen::Index>(10, 5000));
  std::set<Eigen::Index> all(h.train_rows.begin(), h.train_rows.end());
  all.insert(h.validation_rows.begin(), h.validation_rows.end());
  CHECK(all.size() == 60000);
  CHECK(h.validation.X.col(17) == train.X.col(h.validation_rows[17]));
}

TEST_CASE("Fashion-MNIST: the directory comes from SLOWMO_FASHION_MNIST_DIR, else Debian's") {
  const char* was = std::getenv("SLOWMO_FASHION_MNIST_DIR");
  const std::string saved = was ? was : "";
  ::setenv("SLOWMO_FASHION_MNIST_DIR", "/somewhere/else", 1);
  CHECK(problems::default_fashion_mnist_dir() == fs::path("/somewhere/else"));
  ::setenv("SLOWMO_FASHION_MNIST_DIR", "", 1);
  CHECK(problems::default_fashion_mnist_dir() == fs::path("/usr/share/datasets/fashion-mnist"));
  ::unsetenv("SLOWMO_FASHION_MNIST_DIR");
  CHECK(problems::default_fashion_mnist_dir() == fs::path("/usr/share/datasets/fashion-mnist"));
  if (was) ::setenv("SLOWMO_FASHION_MNIST_DIR", saved.c_str(), 1);
}

TEST_CASE("Fashion-MNIST: a missing directory or file says what to install") {
  const fs::path nowhere = fs::temp_directory_path() / ("slowmo_no_fashion_mnist_" + std::to_string(::getpid()));
  CHECK_THROWS_WITH_AS(problems::load_fashion_mnist(nowhere),
                       doctest::Contains(("directory '" + nowhere.string() + "' does not exist").c_str()),
                       problems::data_error);
  CHECK_THROWS_WITH_AS(problems::load_fashion_mnist(nowhere), doctest::Contains("apt-get install dataset-fashion-mnist"),
                       problems::data_error);
  CHECK_THROWS_WITH_AS(problems::load_fashion_mnist(nowhere), doctest::Contains("cmake/setup-debian.sh"),
                       problems::data_error);

  fs::create_directories(nowhere);
  const std::string missing = (nowhere / "train-images-idx3-ubyte.gz").string();
  CHECK_THROWS_WITH_AS(problems::load_fashion_mnist(nowhere), doctest::Contains(("no file '" + missing + "'").c_str()),
                       problems::data_error);
  CHECK_THROWS_WITH_AS(problems::load_fashion_mnist(nowhere), doctest::Contains("dataset-fashion-mnist"),
                       problems::data_error);
  fs::remove_all(nowhere);
}
