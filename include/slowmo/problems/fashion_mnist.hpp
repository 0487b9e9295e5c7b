// slowmo/problems/fashion_mnist.hpp — Fashion-MNIST (Xiao, Rasul and Vollgraf 2017): 28 x 28
// grey images of clothing in 10 balanced classes, 60,000 for training and 10,000 for test,
// read from the IDX files of Debian's package dataset-fashion-mnist
// (/usr/share/datasets/fashion-mnist). Needs zlib: link slowmo::data.
#pragma once

#include <array>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>

#include "slowmo/core/error.hpp"
#include "slowmo/problems/dataset.hpp"
#include "slowmo/problems/idx.hpp"

namespace slowmo::problems {

/// The training set and the official test set (keep the test set for reporting; tune on a
/// holdout() of the training set).
struct FashionMnist {
  Dataset train, test;
};

/// Label k's name, in the dataset's own order.
inline constexpr std::array<std::string_view, 10> fashion_mnist_classes = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

/// Where Debian's package dataset-fashion-mnist puts the files.
inline constexpr std::string_view debian_fashion_mnist_dir = "/usr/share/datasets/fashion-mnist";

/// $SLOWMO_FASHION_MNIST_DIR when set and not empty, else Debian's directory.
inline std::filesystem::path default_fashion_mnist_dir() {
  const char* env = std::getenv("SLOWMO_FASHION_MNIST_DIR");
  if (env && *env) return env;
  return std::filesystem::path(debian_fashion_mnist_dir);
}

namespace detail {

inline std::string fashion_mnist_remedy() {
  return std::string("install Debian's package dataset-fashion-mnist (apt-get install dataset-fashion-mnist, or run "
                     "cmake/setup-debian.sh from slowmo's source tree), or set SLOWMO_FASHION_MNIST_DIR to a "
                     "directory holding train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                     "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (uncompressed copies, without .gz, "
                     "work too)");
}

/// dir/stem.gz, or dir/stem when only the uncompressed file is there; throws (with the remedy)
/// when neither is.
inline std::filesystem::path fashion_mnist_file(const std::filesystem::path& dir, const std::string& stem) {
  std::error_code ec;
  const std::filesystem::path gz = dir / (stem + ".gz"), plain = dir / stem;
  if (std::filesystem::exists(gz, ec)) return gz;
  if (std::filesystem::exists(plain, ec)) return plain;
  throw data_error(slowmo::detail::concat("slowmo::problems::load_fashion_mnist: no file '", gz.string(), "' (nor '",
                                          plain.string(), "'): ", fashion_mnist_remedy()));
}

}  // namespace detail

/// Reads the training and test sets from `dir` (by default default_fashion_mnist_dir()):
/// 784 features (pixels row by row, in [0, 1]) and 10 classes; samples in the files' order.
/// Throws data_error, with what to install, when the directory or a file is missing, and
/// naming the file for any malformed one.
inline FashionMnist load_fashion_mnist(const std::filesystem::path& dir = default_fashion_mnist_dir()) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    throw data_error(slowmo::detail::concat("slowmo::problems::load_fashion_mnist: directory '", dir.string(), "' ",
                                            std::filesystem::exists(dir, ec) ? "is not a directory" : "does not exist",
                                            ": ", detail::fashion_mnist_remedy()));
  // Every file is looked for before any is read: a missing one fails at once.
  const auto train_images = detail::fashion_mnist_file(dir, "train-images-idx3-ubyte");
  const auto train_labels = detail::fashion_mnist_file(dir, "train-labels-idx1-ubyte");
  const auto test_images = detail::fashion_mnist_file(dir, "t10k-images-idx3-ubyte");
  const auto test_labels = detail::fashion_mnist_file(dir, "t10k-labels-idx1-ubyte");
  constexpr int classes = int(fashion_mnist_classes.size());
  FashionMnist fm;
  fm.train = read_idx(train_images, train_labels, classes, "fashion-mnist train");
  fm.test = read_idx(test_images, test_labels, classes, "fashion-mnist test");
  for (const auto& [set, file] : {std::pair{&fm.train, &train_images}, std::pair{&fm.test, &test_images}})
    if (set->features() != 28 * 28)
      throw data_error(slowmo::detail::concat("slowmo::problems::load_fashion_mnist: images file '", file->string(),
                                              "': images of ", set->features(),
                                              " pixels (expected 28 x 28 = 784): not Fashion-MNIST"));
  return fm;
}

}  // namespace slowmo::problems
