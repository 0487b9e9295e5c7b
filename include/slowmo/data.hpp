// slowmo/data.hpp — the dataset readers that need zlib (the slowmo::data CMake component):
// IDX files, gzipped or not, and Fashion-MNIST from Debian's dataset-fashion-mnist. The rest
// of the problems layer (datasets in memory, splits across workers, the Gaussian mixture, the
// MLP and the classification problem) needs nothing beyond Eigen: include those directly.
#pragma once

#include "slowmo/problems/fashion_mnist.hpp"
#include "slowmo/problems/idx.hpp"
