// slowmo/cuda.hpp — everything in slowmo/slowmo.hpp plus the GPU backend: device vectors,
// the Device memory space and the optimizers on it (cuda::Sgd, cuda::Nesterov, cuda::Adam,
// cuda::AdamW), and the NCCL communicator with run_local(). Compile with nvcc and link
// slowmo::cuda. The MPI bootstrap of NCCL is in slowmo/cuda/nccl_mpi.hpp.
#pragma once

#include "slowmo/cuda/device.hpp"
#include "slowmo/cuda/device_vector.hpp"
#include "slowmo/cuda/error.hpp"
#include "slowmo/cuda/nccl.hpp"
#include "slowmo/cuda/stream.hpp"
#include "slowmo/slowmo.hpp"
