// slowmo/cuda/nccl.hpp — slowmo::cuda::Nccl, a Communicator over NCCL whose spans point to
// device memory, and run_local(), which runs one worker per GPU of this process.
//
//   slowmo::cuda::run_local({.devices = {0, 1, 2, 3}}, [](slowmo::cuda::Nccl& comm) {
//     slowmo::SlowMo opt(slowmo::cuda::Adam<float>({.lr = 1e-3}), comm, {.tau = 12});
//     ...  // x, g: cuda::DeviceVector<float>; opt.step(x, g) never leaves the GPU
//   });
//
// Over MPI ranks (one GPU each), slowmo/cuda/nccl_mpi.hpp bootstraps the same communicator
// by broadcasting NCCL's unique id.
//
// Stream-ordered: every operation is queued on the calling thread's cuda::current_stream()
// (or on the stream passed as the last argument) and returns without waiting for the GPU,
// so a training step is a sequence of kernels and NCCL calls on one stream and the host
// never waits for it. Exceptions: barrier() waits for the stream, and spans over host
// memory (allowed, e.g. for the conformance suite) are staged through device memory and
// waited for.
//
// The host side of the workers talks over a host channel (in-process, or MPI) that never
// waits for a GPU: an exchange's push-sum weight travels there (so exchange() can return it
// at once), together with the sizes, so a send whose size differs from what the receiver
// expects throws comm_error on both workers instead of hanging NCCL. In validated mode
// (the default, NcclOptions::validate) every collective is first agreed on by all workers
// (operation, type, size, root), as the MPI backend does, at the cost of one small host
// all-reduce per collective; a mismatch throws comm_error on every worker.
//
// all_reduce(mean) is NCCL's sum followed by a division by m on the device — the same
// arithmetic as the other backends (NCCL's own ncclAvg multiplies by 1/m before summing).
//
// All-gathers: all_gather is ncclAllGather; all_gather_v is one ncclBroadcast per worker
// (from its block of recv on the root to everyone's) in one NCCL group. The sizes (count,
// capacity, counts size) of every worker travel first over the host channel, one small
// all_max (all_gather_v always: the counts must be known on the host; all_gather in
// validated mode), so every worker judges them alike and a misfit throws comm_error on
// all of them before NCCL is asked for anything — and counts never wait for the GPU.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "slowmo/core/communicator.hpp"
#include "slowmo/core/detail/thread_group.hpp"
#include "slowmo/core/error.hpp"
#include "slowmo/cuda/detail/host_link.hpp"
#include "slowmo/cuda/device_vector.hpp"
#include "slowmo/cuda/error.hpp"
#include "slowmo/cuda/for_each.hpp"
#include "slowmo/cuda/stream.hpp"

namespace slowmo::cuda {

/// A NCCL call failed (a comm_error: the message names the call, the worker and NCCL's
/// description). code() is the ncclResult_t.
class nccl_error : public comm_error {
 public:
  nccl_error(ncclResult_t code, const std::string& what) : comm_error(what), code_(code) {}
  ncclResult_t code() const noexcept { return code_; }

 private:
  ncclResult_t code_;
};

namespace detail {

/// Throws nccl_error unless `r` is ncclSuccess, with NCCL's last error message when it has one.
template <class... Parts>
void check_nccl(ncclResult_t r, const char* call, const Parts&... parts) {
  if (r == ncclSuccess) return;
  const char* last = ncclGetLastError(nullptr);
  throw nccl_error(r, slowmo::detail::concat("slowmo::cuda::Nccl: ", call, parts..., " failed: ",
                                             ncclGetErrorString(r), last && *last ? " (" : "",
                                             last && *last ? last : "", last && *last ? ")" : ""));
}

inline std::string describe(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return ex.what();
  } catch (...) {
    return "unknown exception";
  }
}

template <class T>
constexpr ncclDataType_t nccl_type() {
  if constexpr (std::is_same_v<T, float>) return ncclFloat32;
  else if constexpr (std::is_same_v<T, double>) return ncclFloat64;
  else if constexpr (std::is_same_v<T, std::int32_t>) return ncclInt32;
  else {
    static_assert(std::is_same_v<T, std::uint8_t>, "slowmo::cuda::Nccl moves float, double, int32 and uint8");
    return ncclUint8;
  }
}

/// The mean's second half: x = x / m, on the device, with the same rounding as the host
/// backends' division.
template <class T>
struct DivideBy {
  T m;
  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& x) const {
    x = x / V(m);
  }
};

/// neighbor_sum's sum of the sources after the first: in = in + received, on the device.
struct AddInto {
  template <class V>
  SLOWMO_HOST_DEVICE void operator()(V& in, const V& received) const {
    in = in + received;
  }
};

/// Whether NCCL can use p directly: device or managed memory (host memory, pageable or
/// pinned, is staged).
inline bool device_accessible(const void* p) {
  cudaPointerAttributes attr{};
  check(cudaPointerGetAttributes(&attr, p), "cudaPointerGetAttributes");
  return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
}

}  // namespace detail

struct NcclOptions {
  /// Before each collective, all workers agree (over the host channel) on the operation,
  /// type, size and root, and throw comm_error on a mismatch instead of hanging or
  /// corrupting memory in NCCL. Costs one small host all-reduce per collective.
  bool validate = true;
};

namespace detail {
/// What a worker's non-blocking all-reduces run on: a side stream, and the events that
/// order it after the caller's stream (ready) and the caller's stream after it (done).
struct Overlap {
  Stream side;
  cudaEvent_t ready = nullptr, done = nullptr;
  bool pending = false;
  Overlap() {
    check(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming), "cudaEventCreateWithFlags");
    check(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), "cudaEventCreateWithFlags");
  }
  ~Overlap() {
    (void)cudaEventDestroy(ready);
    (void)cudaEventDestroy(done);
  }
  Overlap(const Overlap&) = delete;
  Overlap& operator=(const Overlap&) = delete;
};
}  // namespace detail

/// The NCCL side of a Request: wait() makes the calling thread's current stream wait for the
/// side stream's all-reduce (stream-ordered, as every Nccl operation: the host does not
/// block); ready() asks the event. Null: it was done when it started (host memory, staged).
struct PendingNccl {
  detail::Overlap* overlap = nullptr;
  void wait() {
    if (!overlap) return;
    overlap->pending = false;
    check(cudaStreamWaitEvent(current_stream(), overlap->done, 0), "cudaStreamWaitEvent");
  }
  bool ready() { return !overlap || cudaEventQuery(overlap->done) == cudaSuccess; }
};

/// A Communicator over NCCL for buffers in device memory (see the top of this file).
class Nccl {
 public:
  /// The combinators may hand it spans of device memory (core/space.hpp).
  static constexpr bool accepts_device_memory = true;

  /// Takes ownership of `comm` (rank `rank` of `size`, bound to `device`); `link` is this
  /// worker's end of the host channel. Made by run_local() or nccl_from_mpi().
  Nccl(ncclComm_t comm, int rank, int size, int device, std::unique_ptr<detail::HostLink> link,
       NcclOptions options = {})
      : comm_(comm),
        rank_(rank),
        size_(size),
        device_(device),
        link_(std::move(link)),
        options_(options),
        start_(std::chrono::steady_clock::now()) {}
  Nccl(Nccl&& o) noexcept
      : comm_(std::exchange(o.comm_, nullptr)),
        rank_(o.rank_),
        size_(o.size_),
        device_(o.device_),
        link_(std::move(o.link_)),
        options_(o.options_),
        start_(o.start_),
        staging_(std::move(o.staging_)),
        bytes_sent_(o.bytes_sent_),
        messages_sent_(o.messages_sent_),
        sizes_(std::move(o.sizes_)),
        overlap_(std::move(o.overlap_)) {}
  Nccl& operator=(Nccl&&) = delete;
  Nccl(const Nccl&) = delete;
  Nccl& operator=(const Nccl&) = delete;
  ~Nccl() {
    if (comm_) (void)ncclCommDestroy(comm_);
  }

  int rank() const { return rank_; }
  int size() const { return size_; }
  /// The CUDA device this worker's NCCL communicator is bound to.
  int device() const { return device_; }
  ncclComm_t native() const { return comm_; }

  void all_reduce(std::span<float> buf, ReduceOp op) { all_reduce_impl(buf, op, current_stream()); }
  void all_reduce(std::span<double> buf, ReduceOp op) { all_reduce_impl(buf, op, current_stream()); }
  void all_reduce(std::span<float> buf, ReduceOp op, cudaStream_t stream) { all_reduce_impl(buf, op, stream); }
  void all_reduce(std::span<double> buf, ReduceOp op, cudaStream_t stream) { all_reduce_impl(buf, op, stream); }

  void broadcast(std::span<float> buf, int root) { broadcast_impl(buf, root, current_stream()); }
  void broadcast(std::span<double> buf, int root) { broadcast_impl(buf, root, current_stream()); }
  void broadcast(std::span<float> buf, int root, cudaStream_t stream) { broadcast_impl(buf, root, stream); }
  void broadcast(std::span<double> buf, int root, cudaStream_t stream) { broadcast_impl(buf, root, stream); }

  /// Sends `out` (and `weight`) to `dest` and receives `in` from `source` in one NCCL group;
  /// returns the weight `source` sent, which travels over the host channel: no waiting for
  /// the GPU.
  double exchange(std::span<const float> out, double weight, int dest, std::span<float> in, int source) {
    return exchange_impl(out, weight, dest, in, source, current_stream());
  }
  double exchange(std::span<const double> out, double weight, int dest, std::span<double> in, int source) {
    return exchange_impl(out, weight, dest, in, source, current_stream());
  }
  double exchange(std::span<const float> out, double weight, int dest, std::span<float> in, int source,
                  cudaStream_t stream) {
    return exchange_impl(out, weight, dest, in, source, stream);
  }
  double exchange(std::span<const double> out, double weight, int dest, std::span<double> in, int source,
                  cudaStream_t stream) {
    return exchange_impl(out, weight, dest, in, source, stream);
  }

  /// NeighborCommunicator (core/communicator.hpp): one NCCL group of an ncclSend to every
  /// dest and an ncclRecv from every source (the first into `in`, the others into device
  /// scratch, which grows once), then in += each of them in the order of sources, on the
  /// stream. The weights and sizes travel over the host channel first, as exchange's do, so
  /// the returned weight needs no wait for the GPU and a size that does not fit throws
  /// comm_error on both workers of the pair before NCCL is asked for anything.
  double neighbor_sum(std::span<const float> out, double weight, std::span<const int> dests, std::span<float> in,
                      std::span<const int> sources) {
    return neighbor_sum_impl(out, weight, dests, in, sources, current_stream());
  }
  double neighbor_sum(std::span<const double> out, double weight, std::span<const int> dests, std::span<double> in,
                      std::span<const int> sources) {
    return neighbor_sum_impl(out, weight, dests, in, sources, current_stream());
  }
  double neighbor_sum(std::span<const float> out, double weight, std::span<const int> dests, std::span<float> in,
                      std::span<const int> sources, cudaStream_t stream) {
    return neighbor_sum_impl(out, weight, dests, in, sources, stream);
  }
  double neighbor_sum(std::span<const double> out, double weight, std::span<const int> dests, std::span<double> in,
                      std::span<const int> sources, cudaStream_t stream) {
    return neighbor_sum_impl(out, weight, dests, in, sources, stream);
  }

  // GatherCommunicator (core/communicator.hpp), stream-ordered like the rest; counts and
  // the total returned by all_gather_v are known on the host at once.
  void all_gather(std::span<const float> send, std::span<float> recv) { all_gather_impl(send, recv, current_stream()); }
  void all_gather(std::span<const double> send, std::span<double> recv) {
    all_gather_impl(send, recv, current_stream());
  }
  void all_gather(std::span<const std::int32_t> send, std::span<std::int32_t> recv) {
    all_gather_impl(send, recv, current_stream());
  }
  void all_gather(std::span<const std::uint8_t> send, std::span<std::uint8_t> recv) {
    all_gather_impl(send, recv, current_stream());
  }
  void all_gather(std::span<const float> send, std::span<float> recv, cudaStream_t stream) {
    all_gather_impl(send, recv, stream);
  }
  void all_gather(std::span<const double> send, std::span<double> recv, cudaStream_t stream) {
    all_gather_impl(send, recv, stream);
  }
  void all_gather(std::span<const std::int32_t> send, std::span<std::int32_t> recv, cudaStream_t stream) {
    all_gather_impl(send, recv, stream);
  }
  void all_gather(std::span<const std::uint8_t> send, std::span<std::uint8_t> recv, cudaStream_t stream) {
    all_gather_impl(send, recv, stream);
  }
  std::size_t all_gather_v(std::span<const float> send, std::span<float> recv, std::span<std::size_t> counts) {
    return all_gather_v_impl(send, recv, counts, current_stream());
  }
  std::size_t all_gather_v(std::span<const double> send, std::span<double> recv, std::span<std::size_t> counts) {
    return all_gather_v_impl(send, recv, counts, current_stream());
  }
  std::size_t all_gather_v(std::span<const std::int32_t> send, std::span<std::int32_t> recv,
                           std::span<std::size_t> counts) {
    return all_gather_v_impl(send, recv, counts, current_stream());
  }
  std::size_t all_gather_v(std::span<const std::uint8_t> send, std::span<std::uint8_t> recv,
                           std::span<std::size_t> counts) {
    return all_gather_v_impl(send, recv, counts, current_stream());
  }
  std::size_t all_gather_v(std::span<const float> send, std::span<float> recv, std::span<std::size_t> counts,
                           cudaStream_t stream) {
    return all_gather_v_impl(send, recv, counts, stream);
  }
  std::size_t all_gather_v(std::span<const double> send, std::span<double> recv, std::span<std::size_t> counts,
                           cudaStream_t stream) {
    return all_gather_v_impl(send, recv, counts, stream);
  }
  std::size_t all_gather_v(std::span<const std::int32_t> send, std::span<std::int32_t> recv,
                           std::span<std::size_t> counts, cudaStream_t stream) {
    return all_gather_v_impl(send, recv, counts, stream);
  }
  std::size_t all_gather_v(std::span<const std::uint8_t> send, std::span<std::uint8_t> recv,
                           std::span<std::size_t> counts, cudaStream_t stream) {
    return all_gather_v_impl(send, recv, counts, stream);
  }

  /// Waits for this thread's stream, then for every worker to arrive.
  void barrier() {
    check_device("barrier");
    synchronize(current_stream());
    check_async("barrier");
    agree(Kind::barrier, 0, 0, 0, /*always=*/true);
  }

  /// NonBlockingCommunicator (core/communicator.hpp): ncclAllReduce on this worker's side
  /// stream, after what the current stream has queued; the request's wait() orders the
  /// current stream after it. Spans over host memory are staged and reduced at once (the
  /// request is done when it returns). One at a time: another start before the wait throws
  /// usage_error.
  Request<PendingNccl> start_all_reduce(std::span<float> buf, ReduceOp op) { return start_all_reduce_impl(buf, op); }
  Request<PendingNccl> start_all_reduce(std::span<double> buf, ReduceOp op) { return start_all_reduce_impl(buf, op); }

  /// SplitCommunicator (core/communicator.hpp): collective; ncclCommSplit over this
  /// communicator, with the host channel split alike. The workers first learn everyone's
  /// (color, key) over the host channel, so a negative color (NCCL_SPLIT_NOCOLOR included)
  /// fails every worker, naming the workers, before NCCL is asked; the result is on the same
  /// device, with this one's options.
  Nccl split(int color, int key) {
    check_device("split");
    agree(Kind::split, 0, 0, 0, /*always=*/true);
    std::vector<std::int64_t> v(2 * std::size_t(size_), std::numeric_limits<std::int64_t>::min());
    v[2 * std::size_t(rank_)] = color;
    v[2 * std::size_t(rank_) + 1] = key;
    link_->all_max(v);
    int rank = 0, size = 0;
    for (int q = 0; q < size_; ++q) {
      const std::int64_t c = v[2 * std::size_t(q)], k = v[2 * std::size_t(q) + 1];
      if (c != color) continue;
      ++size;
      if (k < key || (k == key && q < rank_)) ++rank;  // MPI_Comm_split's order: (key, old rank)
    }
    const std::string bad = slowmo::detail::split_color_error(
        "slowmo::cuda::Nccl", "worker", size_, [&](int q) { return v[2 * std::size_t(q)]; }, [](int q) { return q; });
    if (!bad.empty()) throw comm_error(bad);
    std::unique_ptr<detail::HostLink> link = link_->split(color, rank, size);
    ncclComm_t sub = nullptr;
    detail::check_nccl(ncclCommSplit(comm_, color, key, &sub, nullptr), "ncclCommSplit", " (worker ", rank_,
                       ", color ", color, ", key ", key, ")");
    int nccl_rank = -1, nccl_size = -1;
    detail::check_nccl(ncclCommUserRank(sub, &nccl_rank), "ncclCommUserRank");
    detail::check_nccl(ncclCommCount(sub, &nccl_size), "ncclCommCount");
    Nccl out(sub, rank, size, device_, std::move(link), options_);
    if (nccl_rank != rank || nccl_size != size)
      throw comm_error(slowmo::detail::concat("slowmo::cuda::Nccl: split: worker ", rank_, " is rank ", nccl_rank,
                                              " of ", nccl_size, " in NCCL's group, but rank ", rank, " of ", size,
                                              " by MPI_Comm_split's order"));
    return out;
  }

  /// Wall-clock seconds since this communicator was made.
  double now() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }

  std::uint64_t bytes_sent() const { return bytes_sent_; }
  std::uint64_t messages_sent() const { return messages_sent_; }

  /// Aborts the NCCL communicator (any operation still queued is abandoned); used when a
  /// worker failed so that none waits for it on the GPU. The communicator is unusable after.
  void abort() noexcept {
    if (comm_) (void)ncclCommAbort(std::exchange(comm_, nullptr));
  }

 private:
  enum class Kind : std::int64_t {
    all_reduce_sum = 1,
    all_reduce_mean,
    broadcast,
    barrier,
    all_gather,
    all_gather_v,
    split
  };

  static const char* kind_name(std::int64_t k) {
    switch (static_cast<Kind>(k)) {
      case Kind::all_reduce_sum: return "all_reduce(sum)";
      case Kind::all_reduce_mean: return "all_reduce(mean)";
      case Kind::broadcast: return "broadcast";
      case Kind::barrier: return "barrier";
      case Kind::all_gather: return "all_gather";
      case Kind::all_gather_v: return "all_gather_v";
      case Kind::split: return "split";
    }
    return "?";
  }
  static bool is_gather(Kind k) { return k == Kind::all_gather || k == Kind::all_gather_v; }

  void check_device(const char* op) const {
    if (!comm_)
      throw comm_error(slowmo::detail::concat("slowmo::cuda::Nccl: worker ", rank_, ": ", op,
                                              " on a communicator that was aborted or moved from"));
    int current = -1;
    check(cudaGetDevice(&current), "cudaGetDevice");
    if (current != device_)
      throw comm_error(slowmo::detail::concat("slowmo::cuda::Nccl: worker ", rank_, ": ", op,
                                              " called with device ", current,
                                              " current, but this worker's communicator is on device ", device_,
                                              "; call cudaSetDevice(", device_, ") in this thread first"));
  }

  void check_async(const char* op) const {
    ncclResult_t async = ncclSuccess;
    detail::check_nccl(ncclCommGetAsyncError(comm_, &async), "ncclCommGetAsyncError");
    detail::check_nccl(async, "asynchronous error, seen at ", op, " on worker ", rank_);
  }

  /// Validated mode: all workers agree on (kind, element type, count, root), or all throw.
  /// `elem` is slowmo::detail::element_code<T>() (float and double: their sizes); 0 for
  /// none. The gathers agree on kind and type only: their sizes are judged from everyone's.
  void agree(Kind kind, std::int64_t elem, std::int64_t count, std::int64_t root, bool always = false) {
    if (!options_.validate && !always) return;
    std::array<std::int64_t, 8> v{std::int64_t(kind), -std::int64_t(kind), elem, -elem, count, -count, root, -root};
    link_->all_max(v);
    if (v[0] == -v[1] && v[2] == -v[3] && v[4] == -v[5] && v[6] == -v[7]) return;
    throw comm_error(slowmo::detail::concat(
        "slowmo::cuda::Nccl: mismatched collective on worker ", rank_, ": this worker called ",
        kind_name(std::int64_t(kind)), " of ", is_gather(kind) ? "" : slowmo::detail::concat(count, " "),
        slowmo::detail::element_name(elem), is_gather(kind) ? " values" : "",
        (kind == Kind::broadcast ? slowmo::detail::concat(" from root ", root) : ""),
        "; across workers the operation ranges over [", kind_name(-v[1]), ", ", kind_name(v[0]),
        "], the count over [", -v[5], ", ", v[4], "], the root over [", -v[7], ", ", v[6],
        "]; every worker must call the same collectives in the same order with the same sizes"));
  }

  /// Runs op(device pointer) on buf: directly when buf is device memory, else through a
  /// device copy (copied in when `in`, back when `out`), waiting for the stream.
  template <class T, class Op>
  void on_device(std::span<T> buf, bool in, bool out, cudaStream_t stream, std::size_t staging_offset, Op&& op) {
    if (buf.empty() || detail::device_accessible(buf.data())) {
      op(buf.data());
      return;
    }
    using U = std::remove_const_t<T>;
    reserve_staging(staging_offset + buf.size_bytes());
    U* dev = reinterpret_cast<U*>(reinterpret_cast<char*>(staging_.data()) + staging_offset);
    if (in)
      check(cudaMemcpyAsync(dev, buf.data(), buf.size_bytes(), cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync",
            " (staging ", buf.size(), " values from host memory)");
    op(dev);
    if constexpr (!std::is_const_v<T>)
      if (out)
        check(cudaMemcpyAsync(buf.data(), dev, buf.size_bytes(), cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync",
              " (staging ", buf.size(), " values back to host memory)");
    synchronize(stream);
  }

  void reserve_staging(std::size_t bytes) {
    if (std::size_t(staging_.size()) * sizeof(double) < bytes)
      staging_.resize(Eigen::Index((bytes + sizeof(double) - 1) / sizeof(double)));
  }

  template <class T>
  void all_reduce_impl(std::span<T> buf, ReduceOp op, cudaStream_t stream) {
    check_device("all_reduce");
    agree(op == ReduceOp::sum ? Kind::all_reduce_sum : Kind::all_reduce_mean, slowmo::detail::element_code<T>(),
          std::int64_t(buf.size()), -1);
    if (buf.empty()) return;
    on_device(buf, true, true, stream, 0, [&](T* p) {
      detail::check_nccl(ncclAllReduce(p, p, buf.size(), detail::nccl_type<T>(), ncclSum, comm_, stream),
                         "ncclAllReduce", " of ", buf.size(), " values on worker ", rank_);
      if (op == ReduceOp::mean && size_ > 1)
        detail::for_each(std::int64_t(buf.size()), detail::DivideBy<T>{T(size_)}, stream, p);
    });
    bytes_sent_ += static_cast<std::uint64_t>(2.0 * (size_ - 1) / size_ * double(buf.size_bytes()));
  }

  template <class T>
  Request<PendingNccl> start_all_reduce_impl(std::span<T> buf, ReduceOp op) {
    check_device("start_all_reduce");
    if (overlap_ && overlap_->pending)
      throw usage_error(slowmo::detail::concat("slowmo::cuda::Nccl: worker ", rank_,
                                               ": start_all_reduce while its last one has not been waited for: "
                                               "wait() for it first (one non-blocking collective at a time)"));
    if (buf.empty() || !detail::device_accessible(buf.data())) {
      all_reduce_impl(buf, op, current_stream());
      return Request<PendingNccl>(PendingNccl{});
    }
    agree(op == ReduceOp::sum ? Kind::all_reduce_sum : Kind::all_reduce_mean, slowmo::detail::element_code<T>(),
          std::int64_t(buf.size()), -1);
    if (!overlap_) overlap_ = std::make_unique<detail::Overlap>();
    detail::Overlap& o = *overlap_;
    check(cudaEventRecord(o.ready, current_stream()), "cudaEventRecord");
    check(cudaStreamWaitEvent(o.side, o.ready, 0), "cudaStreamWaitEvent");
    detail::check_nccl(ncclAllReduce(buf.data(), buf.data(), buf.size(), detail::nccl_type<T>(), ncclSum, comm_, o.side),
                       "ncclAllReduce", " (non-blocking) of ", buf.size(), " values on worker ", rank_);
    if (op == ReduceOp::mean && size_ > 1)
      detail::for_each(std::int64_t(buf.size()), detail::DivideBy<T>{T(size_)}, o.side.get(), buf.data());
    check(cudaEventRecord(o.done, o.side), "cudaEventRecord");
    o.pending = true;
    bytes_sent_ += static_cast<std::uint64_t>(2.0 * (size_ - 1) / size_ * double(buf.size_bytes()));
    return Request<PendingNccl>(PendingNccl{&o});
  }

  template <class T>
  void broadcast_impl(std::span<T> buf, int root, cudaStream_t stream) {
    check_device("broadcast");
    if (root < 0 || root >= size_)
      throw comm_error(slowmo::detail::concat("slowmo::cuda::Nccl: worker ", rank_, ": broadcast root ", root,
                                              " is out of range [0, ", size_, ")"));
    agree(Kind::broadcast, slowmo::detail::element_code<T>(), std::int64_t(buf.size()), root);
    if (buf.empty()) return;
    on_device(buf, rank_ == root, true, stream, 0, [&](T* p) {
      detail::check_nccl(ncclBroadcast(p, p, buf.size(), detail::nccl_type<T>(), root, comm_, stream),
                         "ncclBroadcast", " of ", buf.size(), " values from root ", root, " on worker ", rank_);
    });
    if (rank_ == root) bytes_sent_ += buf.size_bytes();
  }

  /// Every worker's (send count, recv capacity, counts size), in sizes_, by one all_max over
  /// the host channel (each worker fills its own triple, -1 elsewhere); throws the same
  /// comm_error on every worker when they do not fit. Returns the total count.
  template <class T>
  std::size_t exchange_sizes(bool variable, std::size_t send, std::size_t recv, std::size_t counts) {
    sizes_.assign(3 * std::size_t(size_), -1);  // grows once
    std::int64_t* mine = &sizes_[3 * std::size_t(rank_)];
    mine[0] = std::int64_t(send), mine[1] = std::int64_t(recv), mine[2] = std::int64_t(counts);
    link_->all_max(sizes_);
    auto at = [&](int q) {
      const std::int64_t* v = &sizes_[3 * std::size_t(q)];
      return slowmo::detail::GatherSizes{std::size_t(v[0]), std::size_t(v[1]), std::size_t(v[2])};
    };
    const char* type = slowmo::detail::element_name(slowmo::detail::element_code<T>());
    const std::string e = slowmo::detail::gather_size_error("slowmo::cuda::Nccl", "worker", variable, size_, type, at);
    if (!e.empty()) throw comm_error(e);
    std::size_t total = 0;
    for (int q = 0; q < size_; ++q) total += at(q).send;
    return total;
  }

  /// Runs op(send on the device, recv on the device), staging host spans: send at the start
  /// of the staging buffer, recv after it.
  template <class T, class Op>
  void on_device_pair(std::span<const T> send, std::span<T> recv, cudaStream_t stream, Op&& op) {
    const std::size_t recv_offset = (send.size_bytes() + 255) / 256 * 256;
    const bool send_direct = send.empty() || detail::device_accessible(send.data());
    const bool recv_direct = recv.empty() || detail::device_accessible(recv.data());
    if (!send_direct || !recv_direct) reserve_staging(recv_offset + recv.size_bytes());  // before taking pointers
    on_device(send, true, false, stream, 0, [&](const T* src) {
      on_device(recv, false, true, stream, recv_offset, [&](T* dst) { op(src, dst); });
    });
  }

  template <class T>
  void all_gather_impl(std::span<const T> send, std::span<T> recv, cudaStream_t stream) {
    check_device("all_gather");
    agree(Kind::all_gather, slowmo::detail::element_code<T>(), 0, 0);
    if (options_.validate)
      exchange_sizes<T>(false, send.size(), recv.size(), std::size_t(size_));
    else if (recv.size() != std::size_t(size_) * send.size())  // unvalidated: only this worker knows
      throw comm_error(slowmo::detail::concat("slowmo::cuda::Nccl: worker ", rank_, ": all_gather of ", send.size(),
                                              " values from each of ", size_,
                                              " workers: recv must hold size() * send.size() = ",
                                              std::size_t(size_) * send.size(), " values, but it holds ", recv.size()));
    if (send.empty()) return;
    // In place (send is this worker's block of recv) is NCCL's own in-place form.
    on_device_pair(send, recv, stream, [&](const T* src, T* dst) {
      detail::check_nccl(ncclAllGather(src, dst, send.size(), detail::nccl_type<T>(), comm_, stream), "ncclAllGather",
                         " of ", send.size(), " values per worker on worker ", rank_);
    });
    bytes_sent_ += std::uint64_t(size_ - 1) * send.size_bytes();  // ring: every block but the successor's
  }

  template <class T>
  std::size_t all_gather_v_impl(std::span<const T> send, std::span<T> recv, std::span<std::size_t> counts,
                                cudaStream_t stream) {
    check_device("all_gather_v");
    agree(Kind::all_gather_v, slowmo::detail::element_code<T>(), 0, 0);
    const std::size_t total = exchange_sizes<T>(true, send.size(), recv.size(), counts.size());
    for (int q = 0; q < size_; ++q) counts[std::size_t(q)] = std::size_t(sizes_[3 * std::size_t(q)]);
    if (total == 0) return 0;
    // Only the first `total` values: staging copies back what it covers, and recv past the
    // total must stay untouched.
    on_device_pair(send, recv.first(total), stream, [&](const T* src, T* dst) {
      detail::check_nccl(ncclGroupStart(), "ncclGroupStart");
      ncclResult_t r = ncclSuccess;
      std::size_t at = 0;
      for (int q = 0; q < size_ && r == ncclSuccess; ++q) {
        const std::size_t n = counts[std::size_t(q)];
        // The root reads its send (in place when that is its block of recv); the others
        // only write their recv.
        if (n > 0)
          r = ncclBroadcast(q == rank_ ? src : dst + at, dst + at, n, detail::nccl_type<T>(), q, comm_, stream);
        at += n;
      }
      const ncclResult_t end = ncclGroupEnd();
      detail::check_nccl(r, "ncclBroadcast", " (all_gather_v of ", total, " values on worker ", rank_, ")");
      detail::check_nccl(end, "ncclGroupEnd", " (all_gather_v on worker ", rank_, ")");
    });
    bytes_sent_ += (total - counts[std::size_t((rank_ + 1) % size_)]) * sizeof(T);  // as a ring all-gather
    return total;
  }

  void check_peer(int peer, const char* what) const {
    if (peer < 0 || peer >= size_)
      throw comm_error(slowmo::detail::concat("slowmo::cuda::Nccl: worker ", rank_, ": exchange ", what, " = ", peer,
                                              " is out of range [0, ", size_, ")"));
    if (peer == rank_)
      throw comm_error(slowmo::detail::concat("slowmo::cuda::Nccl: worker ", rank_, ": exchange ", what, " = ", peer,
                                              " is the worker itself; a worker cannot exchange with itself"));
  }

  template <class T>
  double exchange_impl(std::span<const T> out, double weight, int dest, std::span<T> in, int source,
                       cudaStream_t stream) {
    check_device("exchange");
    check_peer(dest, "dest");
    check_peer(source, "source");
    // Host channel first: the weight and our size go to dest, what we expect to source.
    link_->post(dest, detail::HostLink::exchange_header, {weight, double(out.size())});
    link_->post(source, detail::HostLink::exchange_expect, {double(in.size()), 0.0});
    const auto header = link_->take(source, detail::HostLink::exchange_header);
    const auto expect = link_->take(dest, detail::HostLink::exchange_expect);
    link_->complete_posts();
    if (header[1] != double(in.size()))
      throw comm_error(slowmo::detail::concat("slowmo::cuda::Nccl: exchange: worker ", rank_, " expected ", in.size(),
                                              " values from worker ", source, ", which sends ", header[1]));
    if (expect[0] != double(out.size()))
      throw comm_error(slowmo::detail::concat("slowmo::cuda::Nccl: exchange: worker ", rank_, " sends ", out.size(),
                                              " values to worker ", dest, ", which expects ", expect[0]));
    const std::size_t in_offset = (out.size_bytes() + 255) / 256 * 256;  // staging: out, then in
    const bool out_direct = out.empty() || detail::device_accessible(out.data());
    const bool in_direct = in.empty() || detail::device_accessible(in.data());
    if (!out_direct || !in_direct) reserve_staging(in_offset + in.size_bytes());  // before taking pointers into it
    on_device(out, true, false, stream, 0, [&](const T* src) {
      on_device(in, false, true, stream, in_offset, [&](T* dst) {
        detail::check_nccl(ncclGroupStart(), "ncclGroupStart");
        ncclResult_t r = ncclSuccess;
        if (!out.empty()) r = ncclSend(src, out.size(), detail::nccl_type<T>(), dest, comm_, stream);
        if (r == ncclSuccess && !in.empty()) r = ncclRecv(dst, in.size(), detail::nccl_type<T>(), source, comm_, stream);
        const ncclResult_t end = ncclGroupEnd();
        detail::check_nccl(r, "ncclSend/ncclRecv", " (worker ", rank_, " to ", dest, ", from ", source, ")");
        detail::check_nccl(end, "ncclGroupEnd", " (exchange on worker ", rank_, ")");
      });
    });
    bytes_sent_ += out.size_bytes();
    messages_sent_ += 1;
    return header[0];
  }

  template <class T>
  double neighbor_sum_impl(std::span<const T> out, double weight, std::span<const int> dests, std::span<T> in,
                           std::span<const int> sources, cudaStream_t stream) {
    check_device("neighbor_sum");
    for (const auto& [peers, what] : {std::pair{dests, "dests"}, std::pair{sources, "sources"}})
      if (std::string e = slowmo::detail::neighbor_peer_error("slowmo::cuda::Nccl", "worker", rank_, size_, peers,
                                                              what, neighbor_mark_, neighbor_epoch_);
          !e.empty())
        throw comm_error(e);
    // Host channel first (the tags of exchange, in the same order on both sides of a pair):
    // the weight and our size go to every dest, what we expect to every source.
    for (int d : dests) link_->post(d, detail::HostLink::exchange_header, {weight, double(out.size())});
    for (int q : sources) link_->post(q, detail::HostLink::exchange_expect, {double(in.size()), 0.0});
    std::string error;
    double total = 0;
    for (int q : sources) {
      const auto header = link_->take(q, detail::HostLink::exchange_header);
      total += header[0];
      if (header[1] != double(in.size()) && error.empty())
        error = slowmo::detail::concat("slowmo::cuda::Nccl: neighbor_sum: worker ", rank_, " expected ", in.size(),
                                       " values from worker ", q, ", which sends ", header[1]);
    }
    for (int d : dests) {
      const auto expect = link_->take(d, detail::HostLink::exchange_expect);
      if (expect[0] != double(out.size()) && error.empty())
        error = slowmo::detail::concat("slowmo::cuda::Nccl: neighbor_sum: worker ", rank_, " sends ", out.size(),
                                       " values to worker ", d, ", which expects ", expect[0]);
    }
    link_->complete_posts();
    if (!error.empty()) throw comm_error(error);
    // Device scratch for the sources after the first, each block 256-byte aligned.
    const std::size_t block = (in.size_bytes() + 255) / 256 * 256;
    const std::size_t extra = sources.size() > 1 ? (sources.size() - 1) * block : 0;
    if (std::size_t(neighbor_scratch_.size()) * sizeof(double) < extra)
      neighbor_scratch_.resize(Eigen::Index((extra + sizeof(double) - 1) / sizeof(double)));
    const std::size_t in_offset = (out.size_bytes() + 255) / 256 * 256;  // staging: out, then in
    const bool out_direct = out.empty() || detail::device_accessible(out.data());
    const bool in_direct = in.empty() || detail::device_accessible(in.data());
    if (!out_direct || !in_direct) reserve_staging(in_offset + in.size_bytes());  // before taking pointers into it
    on_device(out, true, false, stream, 0, [&](const T* src) {
      on_device(in, false, true, stream, in_offset, [&](T* dst) {
        if (sources.empty() && !in.empty())  // all-zero bits: +0 in float and double
          check(cudaMemsetAsync(dst, 0, in.size_bytes(), stream), "cudaMemsetAsync", " (neighbor_sum with no sources)");
        auto scratch = [&](std::size_t j) {
          return reinterpret_cast<T*>(reinterpret_cast<char*>(neighbor_scratch_.data()) + (j - 1) * block);
        };
        detail::check_nccl(ncclGroupStart(), "ncclGroupStart");
        ncclResult_t r = ncclSuccess;
        for (std::size_t j = 0; j < dests.size() && r == ncclSuccess && !out.empty(); ++j)
          r = ncclSend(src, out.size(), detail::nccl_type<T>(), dests[j], comm_, stream);
        for (std::size_t j = 0; j < sources.size() && r == ncclSuccess && !in.empty(); ++j)
          r = ncclRecv(j == 0 ? dst : scratch(j), in.size(), detail::nccl_type<T>(), sources[j], comm_, stream);
        const ncclResult_t end = ncclGroupEnd();
        detail::check_nccl(r, "ncclSend/ncclRecv", " (neighbor_sum on worker ", rank_, ")");
        detail::check_nccl(end, "ncclGroupEnd", " (neighbor_sum on worker ", rank_, ")");
        for (std::size_t j = 1; j < sources.size() && !in.empty(); ++j)
          detail::for_each(std::int64_t(in.size()), detail::AddInto{}, stream, dst, static_cast<const T*>(scratch(j)));
      });
    });
    bytes_sent_ += dests.size() * out.size_bytes();
    messages_sent_ += dests.size();
    return total;
  }

  ncclComm_t comm_ = nullptr;
  int rank_ = 0, size_ = 1, device_ = 0;
  std::unique_ptr<detail::HostLink> link_;
  NcclOptions options_;
  std::chrono::steady_clock::time_point start_;
  DeviceVector<double> staging_;  // device copy of host-memory spans; grows once
  std::uint64_t bytes_sent_ = 0, messages_sent_ = 0;
  std::vector<std::int64_t> sizes_;  // all-gathers: every worker's (count, capacity, counts size)
  std::unique_ptr<detail::Overlap> overlap_;  // non-blocking all-reduces: made at the first
  DeviceVector<double> neighbor_scratch_;  // neighbor_sum: the sources after the first; grows once
  std::vector<std::uint32_t> neighbor_mark_;  // neighbor_sum: the peers seen (neighbor_peer_error)
  std::uint32_t neighbor_epoch_ = 0;
};

static_assert(check_communicator<Nccl>());
static_assert(check_gather_communicator<Nccl>());
static_assert(check_neighbor_communicator<Nccl>());

struct LocalOptions {
  /// The CUDA devices to run on, one worker each (rank i on devices[i]); empty: every
  /// visible device.
  std::vector<int> devices{};
  NcclOptions nccl{};
};

/// Runs fn(comm) once per device of this process, each worker on its own thread with its
/// device current and its own NCCL communicator; returns when all have returned (and their
/// streams are done). A worker that throws ends the run: the others are released from any
/// wait on the host channel, NCCL communicators are aborted, and run_local throws
/// slowmo::worker_error naming the first failing worker, with the original nested.
template <class F>
void run_local(const LocalOptions& options, F&& fn) {
  std::string why;
  const int count = device_count(&why);
  if (count == 0)
    throw cuda_error(cudaErrorNoDevice, slowmo::detail::concat("slowmo::cuda::run_local: no CUDA device (", why, ")"));
  std::vector<int> devices = options.devices;
  if (devices.empty())
    for (int d = 0; d < count; ++d) devices.push_back(d);
  for (std::size_t i = 0; i < devices.size(); ++i) {
    slowmo::detail::require_option(devices[i] >= 0 && devices[i] < count, "cuda::run_local",
                                   slowmo::detail::concat("devices[", i, "]"), devices[i],
                                   slowmo::detail::concat("must name one of the ", count, " visible devices"));
    for (std::size_t j = 0; j < i; ++j)
      slowmo::detail::require_option(devices[i] != devices[j], "cuda::run_local",
                                     slowmo::detail::concat("devices[", i, "]"), devices[i],
                                     "appears twice; NCCL runs one worker per device");
  }
  const int m = int(devices.size());
  ncclUniqueId id;
  detail::check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
  auto hub = std::make_shared<detail::LocalHub>(m);
  std::vector<std::exception_ptr> failures(devices.size());
  // Either every worker starts or none does: a worker left alone would wait for ever in
  // ncclCommInitRank for a rank whose thread the system refused.
  slowmo::detail::run_thread_group("cuda::run_local", m, [&](int r) {
    try {
      const int device = devices[std::size_t(r)];
      check(cudaSetDevice(device), "cudaSetDevice", "(", device, ")");
      ncclComm_t raw = nullptr;
      detail::check_nccl(ncclCommInitRank(&raw, m, id, r), "ncclCommInitRank", " (worker ", r, " of ", m,
                         ", device ", device, ")");
      Nccl comm(raw, r, m, device, std::make_unique<detail::LocalLink>(hub, r), options.nccl);
      // While this worker waits for its stream, a peer's failure makes it abort its NCCL
      // work and give up, instead of waiting forever for messages that will not come.
      struct Hook final : detail::WaitHook {
        detail::LocalHub* hub;
        Nccl* comm;
        int rank;
        bool peer_failed() const override { return hub->aborted(); }
        [[noreturn]] void give_up() override {
          comm->abort();
          throw comm_error(slowmo::detail::concat("slowmo::cuda: worker ", rank,
                                                  " stopped waiting for its stream: another worker failed"));
        }
      } hook;
      hook.hub = hub.get();
      hook.comm = &comm;
      hook.rank = r;
      detail::WaitHook* previous = std::exchange(detail::wait_hook(), &hook);
      try {
        fn(comm);
        synchronize(current_stream());  // a fault in this worker's kernels is this worker's failure
      } catch (...) {
        detail::wait_hook() = previous;
        comm.abort();
        throw;
      }
      detail::wait_hook() = previous;
      if (hub->aborted()) comm.abort();  // a peer failed: do not wait for it in ncclCommDestroy
    } catch (...) {
      failures[std::size_t(r)] = std::current_exception();
      hub->abort(r, detail::describe(failures[std::size_t(r)]));  // releases the others' host waits
    }
  });
  // The worker that failed first caused the others' failures (they stopped waiting for it).
  const int first = hub->first_failure();
  if (first < 0) return;
  try {
    std::rethrow_exception(failures[std::size_t(first)]);
  } catch (const std::exception& e) {
    std::throw_with_nested(worker_error(first, e.what()));
  } catch (...) {
    std::throw_with_nested(worker_error(first, "unknown exception"));
  }
}

}  // namespace slowmo::cuda
