// slowmo/slowmo.hpp — everything that needs nothing beyond Eigen (and std::thread):
// optimizers, schedules, and the in-process communicators (simulator and threads). The
// MPI backend is in slowmo/mpi.hpp.
#pragma once

#include "slowmo/comm/simulator.hpp"
#include "slowmo/comm/single_worker.hpp"
#include "slowmo/comm/threads.hpp"
#include "slowmo/core/checkpoint.hpp"
#include "slowmo/core/communicator.hpp"
#include "slowmo/core/concepts.hpp"
#include "slowmo/core/config.hpp"
#include "slowmo/core/error.hpp"
#include "slowmo/core/non_finite.hpp"
#include "slowmo/core/schedule.hpp"
#include "slowmo/core/space.hpp"
#include "slowmo/core/state.hpp"
#include "slowmo/core/vector.hpp"
#include "slowmo/distributed/gradient_all_reduce.hpp"
#include "slowmo/distributed/local_sgd.hpp"
#include "slowmo/distributed/presets.hpp"
#include "slowmo/distributed/sgp.hpp"
#include "slowmo/distributed/slowmo.hpp"
#include "slowmo/distributed/topology.hpp"
#include "slowmo/optim/adam.hpp"
#include "slowmo/optim/lookahead.hpp"
#include "slowmo/optim/sgd.hpp"
