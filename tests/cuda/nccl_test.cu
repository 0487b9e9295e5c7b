// The NCCL communicator and the distributed algorithms on the device.
//   suite "host"       no GPU needed: the host channel, error messages, run_local's checks;
//   suite "device"     one GPU or more (one worker per GPU): the communicator conformance
//                      suite, on host spans (staged) and on device spans; SlowMo and friends
//                      on the device against the simulator on the host; no host round trip;
//   suite "multi_gpu"  two GPUs or more: every algorithm, mismatches, a failing worker;
//   suite "mpi"        one rank per GPU under mpiexec (--mpi): NCCL bootstrapped over MPI.
//
// Device against simulator: with one worker the all-reduce is the identity on both sides and
// the device rules equal the CPU's bit for bit (optim_test.cu), so the runs must agree
// exactly. With m > 1 NCCL sums in its own order (ring, tree, NVLS) while the simulator sums
// in rank order: each all-reduce may differ by a few roundings of its m terms. The
// quadratic test problem contracts, so such differences do not grow faster than linearly
// over the steps: the bound is 16 m eps(T) per step, relative to max(1, |x|).
// First, alone (header self-containment, see optim_test.cu).
#ifdef SLOWMO_TEST_MPI
#include <slowmo/cuda/nccl_mpi.hpp>
#include <slowmo/cuda/nccl_mpi.hpp>
#else
#include <slowmo/cuda/nccl.hpp>
#include <slowmo/cuda/nccl.hpp>
#endif

#include <doctest/doctest.h>

#include <atomic>
#include <barrier>
#include <memory>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <slowmo/cuda.hpp>
#ifdef SLOWMO_TEST_MPI
#include <slowmo/cuda/nccl_mpi.hpp>
#endif

#include "comm/conformance.hpp"
#include "cuda/parity.hpp"

using namespace slowmo;
using cuda::DeviceVector;
using Const = schedule::Constant;

static_assert(check_communicator<cuda::Nccl>());
static_assert(check_gather_communicator<cuda::Nccl>());
static_assert(check_neighbor_communicator<cuda::Nccl>());
static_assert(Optimizer<Sgp<cuda::Sgd<float>, cuda::Nccl, RandomDirectedGraph>>);
static_assert(Optimizer<SlowMo<cuda::Adam<float>, cuda::Nccl>> && Optimizer<SlowMo<cuda::Sgd<double>, cuda::Nccl>>);
static_assert(Optimizer<LocalSgd<cuda::Nesterov<float>, cuda::Nccl>>);
static_assert(Optimizer<GradientAllReduce<cuda::AdamW<double>, cuda::Nccl>>);
static_assert(Optimizer<Sgp<cuda::Sgd<float>, cuda::Nccl>> && Optimizer<SlowMo<Sgp<cuda::Sgd<float>, cuda::Nccl>, cuda::Nccl>>);
static_assert(Optimizer<SlowMo<Lookahead<cuda::Adam<float>>, cuda::Nccl>>);
static_assert(std::same_as<decltype(diloco<float, cuda::Device>(std::declval<cuda::Nccl&>())),
                           SlowMo<AdamW<float, Const, cuda::Device>, cuda::Nccl>>);
static_assert(std::same_as<SlowMo<cuda::Adam<float>, cuda::Nccl>::vector_type, DeviceVector<float>>);
// Host optimizers work with the NCCL communicator too (it stages host memory).
static_assert(Optimizer<SlowMo<Adam<float>, cuda::Nccl>>);

namespace {

/// Device memory of any element type (DeviceVector holds float and double only), for the
/// gathers' int32 and uint8: a copy of `host`, copied back by back().
template <class T>
struct DeviceCopy {
  T* p = nullptr;
  std::size_t n = 0;
  explicit DeviceCopy(std::span<const T> host) : n(host.size()) {
    if (n == 0) return;
    cuda::check(cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(T)), "cudaMalloc");
    cuda::check(cudaMemcpy(p, host.data(), n * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy");
  }
  DeviceCopy(const DeviceCopy&) = delete;
  DeviceCopy& operator=(const DeviceCopy&) = delete;
  ~DeviceCopy() {
    if (p) (void)cudaFree(p);
  }
  std::span<T> span() const { return {p, n}; }
  void back(std::span<T> host) const {
    cuda::synchronize(cuda::current_stream());
    if (n) cuda::check(cudaMemcpy(host.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy");
  }
};

/// The conformance suite works on host vectors; this adaptor gives it the NCCL
/// communicator's device path: every buffer is copied to device memory, the call gets
/// device spans, and the result is copied back.
struct DeviceMirror {
  cuda::Nccl& comm;

  int rank() const { return comm.rank(); }
  int size() const { return comm.size(); }
  void barrier() { comm.barrier(); }
  double now() const { return comm.now(); }

  template <class T>
  static DeviceVector<T> to_device(std::span<const T> host) {
    return DeviceVector<T>::from_host(Eigen::Map<const Vector<T>>(host.data(), Eigen::Index(host.size())));
  }
  template <class T>
  static void back(const DeviceVector<T>& d, std::span<T> host) {
    Eigen::Map<Vector<T>> map(host.data(), Eigen::Index(host.size()));
    d.copy_to_host(map);
  }
  template <class T>
  void all_reduce(std::span<T> buf, ReduceOp op) {
    DeviceVector<T> d = to_device<T>(buf);
    comm.all_reduce(cuda::as_span(d), op);
    back(d, buf);
  }
  /// The device copy stays with the request, and comes back to buf when it is waited for.
  template <class T>
  struct Pending {
    std::unique_ptr<DeviceVector<T>> d;
    std::span<T> host;
    Request<cuda::PendingNccl> inner;
    void wait() {
      inner.wait();
      back(*d, host);
    }
    bool ready() { return inner.ready(); }
  };
  template <class T>
  Request<Pending<T>> start_all_reduce(std::span<T> buf, ReduceOp op) {
    auto d = std::make_unique<DeviceVector<T>>(to_device<T>(buf));
    auto inner = comm.start_all_reduce(cuda::as_span(*d), op);
    return Request<Pending<T>>(Pending<T>{std::move(d), buf, std::move(inner)});
  }
  template <class T>
  void broadcast(std::span<T> buf, int root) {
    DeviceVector<T> d = to_device<T>(buf);
    comm.broadcast(cuda::as_span(d), root);
    back(d, buf);
  }
  template <class T>
  double exchange(std::span<const T> out, double weight, int dest, std::span<T> in, int source) {
    const DeviceVector<T> d_out = to_device<T>(out);
    DeviceVector<T> d_in(Eigen::Index(in.size()));
    const double w = comm.exchange(cuda::as_span(d_out), weight, dest, cuda::as_span(d_in), source);
    back(d_in, in);
    return w;
  }
  template <class T>
  double neighbor_sum(std::span<const T> out, double weight, std::span<const int> dests, std::span<T> in,
                      std::span<const int> sources) {
    const DeviceVector<T> d_out = to_device<T>(out);
    DeviceVector<T> d_in(Eigen::Index(in.size()));
    const double w = comm.neighbor_sum(cuda::as_span(d_out), weight, dests, cuda::as_span(d_in), sources);
    back(d_in, in);
    return w;
  }
  // recv goes to the device with what it holds, so that what the gather must not touch
  // (all_gather_v past the total) comes back as it was.
  template <class T>
  void all_gather(std::span<const T> send, std::span<T> recv) {
    const DeviceCopy<T> d_send{send}, d_recv{std::span<const T>(recv)};
    comm.all_gather(std::span<const T>(d_send.span()), d_recv.span());
    d_recv.back(recv);
  }
  template <class T>
  std::size_t all_gather_v(std::span<const T> send, std::span<T> recv, std::span<std::size_t> counts) {
    const DeviceCopy<T> d_send{send}, d_recv{std::span<const T>(recv)};
    const std::size_t total = comm.all_gather_v(std::span<const T>(d_send.span()), d_recv.span(), counts);
    d_recv.back(recv);
    return total;
  }
};
static_assert(check_communicator<DeviceMirror>());
static_assert(check_gather_communicator<DeviceMirror>());

std::vector<int> first_devices(int m) {
  std::vector<int> d(static_cast<std::size_t>(m));
  std::iota(d.begin(), d.end(), 0);
  return d;
}

/// `steps` steps of make(space, comm) on worker r's quadratic (heterogeneous optima, and
/// different starting points, which the initial broadcast must align); the final x.
template <class T, class Space, class Comm, class Make>
Vector<T> train(Comm& comm, Make& make, Eigen::Index n, int steps) {
  const int r = comm.rank();
  parity::Problem<T> p(n);
  p.c.array() += T(0.25 * r);
  const Vector<T> x0 = p.x0 * T(1 + r);
  auto opt = make(Space{}, comm);
  if constexpr (std::is_same_v<Space, Host>) {
    Vector<T> x = x0, g(n);
    slowmo::start(opt, x);
    for (int t = 0; t < steps; ++t) {
      Host::for_each(n, parity::Problem<T>::gradient(t), g.data(), x.data(), p.a.data(), p.c.data());
      opt.step(x, g);
    }
    return x;
  } else {
    DeviceVector<T> x = DeviceVector<T>::from_host(x0), g(n);
    const DeviceVector<T> a = DeviceVector<T>::from_host(p.a), c = DeviceVector<T>::from_host(p.c);
    slowmo::start(opt, x);
    for (int t = 0; t < steps; ++t) {
      cuda::Device::for_each(n, parity::Problem<T>::gradient(t), g.data(), x.data(), a.data(), c.data());
      opt.step(x, g);
    }
    return x.to_host();
  }
}

template <class T>
double relative_difference(const Vector<T>& a, const Vector<T>& b) {
  double worst = 0;
  for (Eigen::Index i = 0; i < a.size(); ++i)
    worst = std::max(worst, std::abs(double(a[i]) - double(b[i])) / std::max(1.0, std::abs(double(b[i]))));
  return worst;
}

/// The run on m GPUs (NCCL) against the simulator's run with m workers on the host.
template <class T, class Make>
void device_equals_simulator(const char* what, int m, Make make, int steps = 48, Eigen::Index n = 1003) {
  CAPTURE(what);
  CAPTURE(m);
  std::vector<Vector<T>> host(static_cast<std::size_t>(m)), device(static_cast<std::size_t>(m));
  sim::run({.workers = m}, [&](sim::Comm& comm) {
    host[std::size_t(comm.rank())] = train<T, Host>(comm, make, n, steps);
  });
  cuda::run_local({.devices = first_devices(m)}, [&](cuda::Nccl& comm) {
    device[std::size_t(comm.rank())] = train<T, cuda::Device>(comm, make, n, steps);
  });
  double worst = 0;
  for (int r = 0; r < m; ++r) worst = std::max(worst, relative_difference(device[std::size_t(r)], host[std::size_t(r)]));
  const double tol = m == 1 ? 0.0 : 16.0 * steps * m * double(std::numeric_limits<T>::epsilon());
  MESSAGE(what, " on ", m, " GPU(s): largest relative difference to the simulator ", worst, " (bound ", tol, ")");
  CHECK(worst <= tol);
}

/// The algorithms, each for any memory space.
template <class T>
void every_algorithm(int m) {
  device_equals_simulator<T>("slowmo(nesterov)", m, [](auto s, auto& c) {
    return SlowMo(Nesterov<T, Const, decltype(s)>({.lr = 0.1}), c, {.tau = 6, .beta = 0.6});
  });
  device_equals_simulator<T>("slowmo(adam), base state averaged", m, [](auto s, auto& c) {
    return SlowMo(Adam<T, Const, decltype(s)>({.lr = 0.05}), c, {.tau = 5, .beta = 0.5, .base_state = OnSync::average});
  });
  device_equals_simulator<T>("slowmo(lookahead(adam))", m, [](auto s, auto& c) {
    return SlowMo(Lookahead(Adam<T, Const, decltype(s)>({.lr = 0.05}), {.k = 3}), c,
                  {.tau = 6, .beta = 0.5, .base_state = OnSync::keep});
  });
  device_equals_simulator<T>("post-local sgd", m, [](auto s, auto& c) {
    return LocalSgd(Nesterov<T, Const, decltype(s)>({.lr = 0.1}), c, {.H = 4, .warmup_steps = 8});
  });
  device_equals_simulator<T>("gradient all-reduce(adam)", m, [](auto s, auto& c) {
    return GradientAllReduce(Adam<T, Const, decltype(s)>({.lr = 0.05}), c);
  });
  device_equals_simulator<T>("diloco", m, [](auto s, auto& c) {
    return diloco<T, decltype(s)>(c, {.H = 6, .inner_lr = 0.05});
  });
  if (m >= 2) {
    device_equals_simulator<T>("sgp(nesterov)", m, [](auto s, auto& c) {
      return Sgp(Nesterov<T, Const, decltype(s)>({.lr = 0.1}), c);
    });
    device_equals_simulator<T>("slowmo(sgp(sgd))", m, [](auto s, auto& c) {
      return SlowMo(Sgp(Sgd<T, Const, decltype(s)>({.lr = 0.1}), c), c, {.tau = 6, .beta = 0.5});
    });
  }
  if (m >= 3) {
    device_equals_simulator<T>("sgp, ring with 2 peers", m, [](auto s, auto& c) {
      return Sgp(Sgd<T, Const, decltype(s)>({.lr = 0.1}), c, Ring(c.size(), 2));
    });
    device_equals_simulator<T>("sgp, random directed graph", m, [](auto s, auto& c) {
      return Sgp(Sgd<T, Const, decltype(s)>({.lr = 0.1}), c, RandomDirectedGraph(c.size(), 2, 42));
    });
  }
}

/// The nested comm_error a run_local failure carries.
std::string nested_message(const worker_error& e) {
  try {
    std::rethrow_if_nested(e);
  } catch (const std::exception& inner) {
    return inner.what();
  }
  return "";
}

}  // namespace

TEST_SUITE("host") {
  TEST_CASE("host channel: per-sender FIFO messages, all_max, and abort releases every wait") {
    auto hub = std::make_shared<cuda::detail::LocalHub>(3);
    std::vector<std::vector<double>> got(3);
    std::vector<std::int64_t> agreed(3);
    std::vector<std::thread> workers;
    for (int r = 0; r < 3; ++r)
      workers.emplace_back([&, r] {
        cuda::detail::LocalLink link(hub, r);
        for (int q = 0; q < 3; ++q)
          if (q != r)
            for (int k = 0; k < 2; ++k) link.post(q, cuda::detail::HostLink::exchange_header, {double(10 * r + k), 0.0});
        for (int q = 0; q < 3; ++q)
          if (q != r)
            for (int k = 0; k < 2; ++k)
              got[std::size_t(r)].push_back(link.take(q, cuda::detail::HostLink::exchange_header)[0]);
        std::int64_t v[2] = {r, -r};
        link.all_max(v);
        agreed[std::size_t(r)] = v[0] * 100 + v[1];
      });
    for (auto& t : workers) t.join();
    CHECK(got[0] == std::vector<double>{10, 11, 20, 21});
    CHECK(got[1] == std::vector<double>{0, 1, 20, 21});
    CHECK(got[2] == std::vector<double>{0, 1, 10, 11});
    CHECK(agreed == std::vector<std::int64_t>{200, 200, 200});  // max(r) = 2, max(-r) = 0

    // A worker waiting for a message, and two in all_max, are released by another's failure.
    auto hub2 = std::make_shared<cuda::detail::LocalHub>(4);
    std::vector<std::string> errors(3);
    std::vector<std::thread> waiting;
    for (int r = 0; r < 3; ++r)
      waiting.emplace_back([&, r] {
        cuda::detail::LocalLink link(hub2, r);
        try {
          if (r == 0) {
            link.take(3, cuda::detail::HostLink::exchange_header);
          } else {
            std::int64_t v[1] = {r};
            link.all_max(v);
          }
        } catch (const comm_error& e) {
          errors[std::size_t(r)] = e.what();
        }
      });
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    hub2->abort(3, "boom at step 7");
    for (auto& t : waiting) t.join();
    CHECK(errors[0] == "slowmo::cuda: worker 0 stopped waiting for a message from worker 3: worker 3 failed: boom at step 7");
    CHECK(errors[1] == "slowmo::cuda: worker 1 stopped waiting for the other workers: worker 3 failed: boom at step 7");
    CHECK(errors[2].ends_with("worker 3 failed: boom at step 7"));
    CHECK(hub2->first_failure() == 3);
  }

  TEST_CASE("host channel: a split gives each color its own channel; an abort reaches the groups") {
    // 5 workers split twice by r % 2: the groups {0, 2, 4} and {1, 3} of each split talk
    // only among themselves; then worker 4 (in {0, 2, 4}) fails while 0 and 2 wait there.
    auto hub = std::make_shared<cuda::detail::LocalHub>(5);
    std::vector<std::int64_t> sums(5), second(5);
    std::vector<std::string> errors(5);
    std::barrier first_phase(5);
    std::vector<std::thread> workers;
    for (int r = 0; r < 5; ++r)
      workers.emplace_back([&, r] {
        cuda::detail::LocalLink link(hub, r);
        const int color = r % 2, size = color == 0 ? 3 : 2, rank = r / 2;
        auto group = link.split(color, rank, size);
        std::int64_t v[5] = {0, 0, 0, 0, 0};
        v[r] = r + 1;
        group->all_max(v);  // the maximum over the group: only its members' entries are set
        sums[std::size_t(r)] = v[0] + v[1] + v[2] + v[3] + v[4];
        group->post((rank + 1) % size, cuda::detail::HostLink::exchange_header, {double(r), 0.0});
        second[std::size_t(r)] =
            std::int64_t(group->take((rank + size - 1) % size, cuda::detail::HostLink::exchange_header)[0]);
        first_phase.arrive_and_wait();  // (the abort below reaches every group: none may still be in the first)
        auto again = link.split(color, rank, size);  // a second split: new channels
        try {
          if (r == 4) throw std::runtime_error("boom");
          std::int64_t w[1] = {r};
          again->all_max(w);
        } catch (const comm_error& e) {
          errors[std::size_t(r)] = e.what();
        } catch (const std::runtime_error& e) {
          hub->abort(r, e.what());
        }
      });
    for (auto& t : workers) t.join();
    CHECK(sums == std::vector<std::int64_t>{9, 6, 9, 6, 9});  // 1 + 3 + 5 and 2 + 4
    CHECK(second == std::vector<std::int64_t>{4, 3, 0, 1, 2});  // from the group's previous rank
    CHECK(errors[0].ends_with("worker 4 failed: boom"));
    CHECK(errors[2].ends_with("worker 4 failed: boom"));
    // ({1, 3} may finish its agreement before the abort or be released by it: both are right.)
    for (int r : {1, 3}) CHECK((errors[std::size_t(r)].empty() || errors[std::size_t(r)].ends_with("worker 4 failed: boom")));
  }

  TEST_CASE("NCCL errors name the call, what it was doing and NCCL's description") {
    try {
      cuda::detail::check_nccl(ncclInvalidArgument, "ncclAllReduce", " of ", 5, " values on worker ", 1);
      FAIL("no exception");
    } catch (const cuda::nccl_error& e) {
      CHECK(e.code() == ncclInvalidArgument);
      const std::string what = e.what();
      CHECK(what.starts_with("slowmo::cuda::Nccl: ncclAllReduce of 5 values on worker 1 failed: "));
      CHECK(what.find(ncclGetErrorString(ncclInvalidArgument)) != std::string::npos);
    }
    static_assert(std::is_base_of_v<comm_error, cuda::nccl_error>);
  }

  TEST_CASE("run_local refuses what cannot work, before starting any worker") {
    std::string why;
    const int count = cuda::device_count(&why);
    bool ran = false;
    auto fn = [&](cuda::Nccl&) { ran = true; };
    if (count == 0) {
      CHECK_THROWS_WITH_AS(cuda::run_local({}, fn), ("slowmo::cuda::run_local: no CUDA device (" + why + ")").c_str(),
                           cuda::cuda_error);
    } else {
      const std::string bad = std::to_string(count);
      CHECK_THROWS_WITH_AS(cuda::run_local({.devices = {count}}, fn),
                           ("slowmo::cuda::run_local: option 'devices[0]' = " + bad +
                            " is invalid: must name one of the " + bad + " visible devices")
                               .c_str(),
                           invalid_option);
      CHECK_THROWS_WITH_AS(cuda::run_local({.devices = {0, 0}}, fn),
                           "slowmo::cuda::run_local: option 'devices[1]' = 0 is invalid: appears twice; NCCL runs one "
                           "worker per device",
                           invalid_option);
    }
    CHECK(!ran);
  }
}

static_assert(slowmo::check_split_communicator<cuda::Nccl>());
static_assert(slowmo::check_non_blocking_communicator<cuda::Nccl>());

TEST_SUITE("device") {
  TEST_CASE("conformance suite on every GPU: host spans (staged) and device spans") {
    cuda::run_local({}, [](cuda::Nccl& comm) {
      conformance::all(comm);
      DeviceMirror mirror{comm};
      conformance::all(mirror);
    });
  }

  TEST_CASE("conformance suite on groups from split() (ncclCommSplit), and the non-blocking all-reduce") {
    cuda::run_local({}, [](cuda::Nccl& comm) {
      conformance::groups(comm);
      conformance::non_blocking<float>(comm);  // host spans: staged, done at the start
      DeviceMirror mirror{comm};
      conformance::non_blocking<float>(mirror);  // device spans: on the side stream
      conformance::non_blocking<double>(mirror);
    });
  }

  TEST_CASE_TEMPLATE("SlowMo and friends on the GPU(s) equal the simulator on the host", T, float, double) {
    const int m = std::min(cuda::device_count(), 8);
    every_algorithm<T>(m);
    every_algorithm<T>(1);  // one GPU: exactly equal
  }

  TEST_CASE("a SlowMo period on the device never waits for it: it captures into a CUDA graph") {
    // Stream capture fails on any synchronisation or copy to host memory, so a period that
    // captures (base steps, all-reduce, outer update) has no host round trip.
    cuda::run_local({}, [](cuda::Nccl& comm) {
      cuda::Stream stream;
      const cuda::StreamGuard on(stream);
      const parity::Problem<float> p(4099);
      DeviceVector<float> x = DeviceVector<float>::from_host(p.x0), g = DeviceVector<float>::from_host(p.c);
      // NonFinite::propagate: the scan of raise and skip reads a reduction back to the host.
      constexpr NonFinite nf = NonFinite::propagate;
      SlowMo slowmo(cuda::Adam<float>({.lr = 0.01, .non_finite = nf}), comm, {.tau = 4, .base_state = OnSync::average});
      std::optional<Sgp<cuda::Sgd<float>, cuda::Nccl>> sgp;  // gossip needs 2 workers
      if (comm.size() > 1) sgp.emplace(cuda::Sgd<float>({.lr = 0.01, .non_finite = nf}), comm, 1);
      DeviceVector<float> z = x;
      slowmo.start(x);
      if (sgp) sgp->start(z);
      slowmo.step(x, g);  // first steps allocate state: outside the capture
      if (sgp) sgp->step(z, g);
      cudaGraph_t graph = nullptr;
      cuda::check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed), "cudaStreamBeginCapture");
      for (int t = 0; t < 4; ++t) {
        slowmo.step(x, g);
        if (sgp) sgp->step(z, g);
      }
      cuda::check(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture");
      std::size_t nodes = 0;
      cuda::check(cudaGraphGetNodes(graph, nullptr, &nodes), "cudaGraphGetNodes");
      CHECK(nodes >= 4 + 1);  // at least the base steps and the outer update
      // Run it once (every worker captured the same NCCL calls), then leave.
      cudaGraphExec_t exec = nullptr;
      cuda::check(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");
      cuda::check(cudaGraphLaunch(exec, stream), "cudaGraphLaunch");
      stream.synchronize();
      cuda::check(cudaGraphExecDestroy(exec), "cudaGraphExecDestroy");
      cuda::check(cudaGraphDestroy(graph), "cudaGraphDestroy");
      CHECK(slowmo.outer_steps() == 1);
    });
  }

  TEST_CASE("a worker's own mistakes throw at once, naming the worker and the value") {
    cuda::run_local({}, [](cuda::Nccl& comm) {
      const int m = comm.size(), r = comm.rank();
      DeviceVector<float> x = DeviceVector<float>::Zero(4);
      CHECK_THROWS_WITH_AS(comm.broadcast(cuda::as_span(x), m),
                           detail::concat("slowmo::cuda::Nccl: worker ", r, ": broadcast root ", m,
                                          " is out of range [0, ", m, ")")
                               .c_str(),
                           comm_error);
      CHECK_THROWS_WITH_AS(comm.exchange(cuda::as_span(std::as_const(x)), 1.0, r, cuda::as_span(x), r),
                           detail::concat("slowmo::cuda::Nccl: worker ", r, ": exchange dest = ", r,
                                          " is the worker itself; a worker cannot exchange with itself")
                               .c_str(),
                           comm_error);
      comm.barrier();  // everyone is still in step
    });
  }
}

TEST_SUITE("multi_gpu") {
  TEST_CASE("mismatched collectives throw comm_error on every worker instead of hanging NCCL") {
    const int m = cuda::device_count();
    std::atomic<int> threw{0};
    try {
      cuda::run_local({}, [&](cuda::Nccl& comm) {
        DeviceVector<float> x = DeviceVector<float>::Zero(comm.rank() == 0 ? 3 : 4);
        try {
          comm.all_reduce(cuda::as_span(x), ReduceOp::mean);
        } catch (const comm_error&) {
          ++threw;
          throw;
        }
      });
      FAIL("no exception");
    } catch (const worker_error& e) {
      CHECK(nested_message(e).find("mismatched collective on worker") != std::string::npos);
      CHECK(nested_message(e).find("the count over [3, 4]") != std::string::npos);
    }
    CHECK(threw == m);
  }

  TEST_CASE("all-gathers whose sizes or kinds disagree throw comm_error on every worker") {
    const int m = cuda::device_count();
    std::vector<std::string> errors(static_cast<std::size_t>(m));
    try {
      cuda::run_local({}, [&](cuda::Nccl& comm) {
        const int r = comm.rank();
        DeviceVector<float> send = DeviceVector<float>::Zero(r == m - 1 ? 5 : 4), all(4 * m);
        try {
          comm.all_gather(cuda::as_span(std::as_const(send)), cuda::as_span(all));
        } catch (const comm_error& e) {
          errors[std::size_t(r)] = e.what();
        }
        // all_gather_v against all_reduce: the validated mode's agreement.
        std::vector<std::size_t> counts(static_cast<std::size_t>(m));
        if (r == 0) comm.all_gather_v(cuda::as_span(std::as_const(send)), cuda::as_span(all), std::span(counts));
        else comm.all_reduce(cuda::as_span(send), ReduceOp::sum);
      });
      FAIL("no exception");
    } catch (const worker_error& e) {
      CHECK(nested_message(e).find("mismatched collective on worker") != std::string::npos);
      CHECK(nested_message(e).find("all_gather_v") != std::string::npos);
    }
    for (int r = 0; r < m; ++r)
      CHECK(errors[std::size_t(r)] ==
            detail::concat("slowmo::cuda::Nccl: all_gather: the workers send different numbers of float values ",
                           "(worker 0: 4, worker ", m - 1,
                           ": 5); all_gather needs the same number from every worker (all_gather_v takes a different "
                           "number from each)"));
  }

  TEST_CASE("an exchange whose sizes disagree throws on both workers of the pair") {
    std::vector<std::string> errors(2);
    try {
      cuda::run_local({.devices = {0, 1}}, [&](cuda::Nccl& comm) {
        const int r = comm.rank();
        DeviceVector<double> out = DeviceVector<double>::Zero(r == 0 ? 5 : 4), in(4);
        try {
          comm.exchange(cuda::as_span(std::as_const(out)), 1.0, 1 - r, cuda::as_span(in), 1 - r);
        } catch (const comm_error& e) {
          errors[std::size_t(r)] = e.what();
          throw;
        }
      });
      FAIL("no exception");
    } catch (const worker_error&) {
    }
    CHECK(errors[0] == "slowmo::cuda::Nccl: exchange: worker 0 sends 5 values to worker 1, which expects 4");
    CHECK(errors[1] == "slowmo::cuda::Nccl: exchange: worker 1 expected 4 values from worker 0, which sends 5");
  }

  TEST_CASE("a failing worker ends the run: worker_error names it, no other worker hangs") {
    try {
      cuda::run_local({}, [](cuda::Nccl& comm) {
        DeviceVector<float> x = DeviceVector<float>::Zero(1000), g = DeviceVector<float>::Zero(1000);
        SlowMo opt(cuda::Nesterov<float>({.lr = 0.1}), comm, {.tau = 2});
        opt.start(x);
        for (int t = 0; t < 20; ++t) {
          if (comm.rank() == 1 && t == 3) throw std::runtime_error("boom at step 3");
          opt.step(x, g);
        }
      });
      FAIL("no exception");
    } catch (const worker_error& e) {
      CHECK(e.rank() == 1);
      CHECK(std::string(e.what()) == "worker 1 failed: boom at step 3");
    }
  }

  TEST_CASE("a call with another device current says which device to set") {
    cuda::run_local({.devices = {0, 1}}, [](cuda::Nccl& comm) {
      const int other = 1 - comm.device();
      DeviceVector<float> x = DeviceVector<float>::Zero(4);
      cuda::check(cudaSetDevice(other), "cudaSetDevice");
      CHECK_THROWS_WITH_AS(comm.all_reduce(cuda::as_span(x), ReduceOp::sum),
                           detail::concat("slowmo::cuda::Nccl: worker ", comm.rank(), ": all_reduce called with device ",
                                          other, " current, but this worker's communicator is on device ",
                                          comm.device(), "; call cudaSetDevice(", comm.device(), ") in this thread first")
                               .c_str(),
                           comm_error);
      cuda::check(cudaSetDevice(comm.device()), "cudaSetDevice");
      comm.barrier();
    });
  }

  TEST_CASE_TEMPLATE("every algorithm on 2 GPUs and on all of them equals the simulator", T, float, double) {
    every_algorithm<T>(2);
    const int m = std::min(cuda::device_count(), 8);
    if (m > 2) every_algorithm<T>(m);
  }
}

#ifdef SLOWMO_TEST_MPI
TEST_SUITE("mpi") {
  TEST_CASE("NCCL over MPI ranks: conformance suite and SlowMo against the simulator") {
    cuda::Nccl comm = cuda::nccl_from_mpi(MPI_COMM_WORLD);
    conformance::all(comm);
    DeviceMirror mirror{comm};
    conformance::all(mirror);
    conformance::groups(comm);
    // Every rank simulates all m workers on its host and compares its own.
    const int m = comm.size(), r = comm.rank();
    auto make = [](auto s, auto& c) {
      return SlowMo(Adam<float, Const, decltype(s)>({.lr = 0.05}), c, {.tau = 5, .beta = 0.5});
    };
    Vector<float> mine;
    sim::run({.workers = m}, [&](sim::Comm& c) {
      Vector<float> x = train<float, Host>(c, make, 1003, 48);
      if (c.rank() == r) mine = x;
    });
    const Vector<float> device = train<float, cuda::Device>(comm, make, 1003, 48);
    const double tol = 16.0 * 48 * m * double(std::numeric_limits<float>::epsilon());
    CHECK(relative_difference(device, mine) <= tol);
  }
}
#endif
