// A base optimizer whose parameters live in device memory, combined with a communicator
// that reads host memory (the simulator): the combinator must refuse it at compile time,
// saying why, instead of handing device pointers to a host backend.
#include <slowmo/comm/simulator.hpp>
#include <slowmo/comm/single_worker.hpp>
#include <slowmo/distributed/slowmo.hpp>
#include <slowmo/optim/sgd.hpp>

// Host memory behind the scenes, but declared the way slowmo::cuda::Device is: only
// communicators that accept device memory may see its buffers.
struct DeviceLike : slowmo::Host {
  template <class Comm>
  static constexpr bool communicates_with = requires { requires Comm::accepts_device_memory; };
};

#ifdef SLOWMO_COMPILE_FAIL_CONTROL
using Comm = slowmo::SingleWorker;  // never touches the buffers: accepts device memory
#else
using Comm = slowmo::sim::Comm;
#endif

static_assert(sizeof(slowmo::SlowMo<slowmo::Sgd<float, slowmo::schedule::Constant, DeviceLike>, Comm>) > 0);

int main() {}
