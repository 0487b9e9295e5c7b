// slowmo/cuda/nccl_mpi.hpp — the NCCL communicator over MPI ranks, one GPU per rank:
// rank 0 makes NCCL's unique id and broadcasts it over MPI, every rank joins the NCCL
// communicator, and the host channel (exchange weights and sizes, validation, barriers) is
// a duplicate of the MPI communicator. Needs MPI (link slowmo::cuda and MPI::MPI_CXX, or
// slowmo::mpi, whose slowmo::mpi::Comm converts to MPI_Comm):
//
//   slowmo::mpi::run(argc, argv, [](slowmo::mpi::Comm& world) {
//     slowmo::cuda::Nccl comm = slowmo::cuda::nccl_from_mpi(world);   // GPU: local rank % devices
//     ...
//   });
#pragma once

#include <mpi.h>

#include <climits>
#include <deque>
#include <memory>
#include <utility>

#include "slowmo/cuda/nccl.hpp"

namespace slowmo::cuda {

namespace detail {

template <class... Parts>
void check_mpi(int code, const char* call, const Parts&... parts) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  throw comm_error(slowmo::detail::concat("slowmo::cuda::nccl_from_mpi: ", call, parts..., " failed: ",
                                          std::string(text, std::size_t(len))));
}

/// The host channel over (a duplicate of) an MPI communicator.
class MpiLink final : public HostLink {
 public:
  explicit MpiLink(MPI_Comm comm) { check_mpi(MPI_Comm_dup(comm, &comm_), "MPI_Comm_dup"); }
  struct Adopt {};
  MpiLink(MPI_Comm owned, Adopt) : comm_(owned) {}
  ~MpiLink() override {
    for (auto& p : pending_) MPI_Wait(&p.request, MPI_STATUS_IGNORE);
    MPI_Comm_free(&comm_);
  }
  MpiLink(const MpiLink&) = delete;
  MpiLink& operator=(const MpiLink&) = delete;

  void post(int dest, Tag tag, const Message& msg) override {
    pending_.push_back({msg, MPI_REQUEST_NULL});
    auto& p = pending_.back();
    check_mpi(MPI_Isend(p.msg.data(), 2, MPI_DOUBLE, dest, base_tag + tag, comm_, &p.request), "MPI_Isend");
  }
  Message take(int source, Tag tag) override {
    Message msg{};
    check_mpi(MPI_Recv(msg.data(), 2, MPI_DOUBLE, source, base_tag + tag, comm_, MPI_STATUS_IGNORE), "MPI_Recv");
    return msg;
  }
  void complete_posts() override {
    for (auto& p : pending_) check_mpi(MPI_Wait(&p.request, MPI_STATUS_IGNORE), "MPI_Wait");
    pending_.clear();
  }
  void all_max(std::span<std::int64_t> v) override {
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, v.data(), int(v.size()), MPI_INT64_T, MPI_MAX, comm_), "MPI_Allreduce");
  }
  std::unique_ptr<HostLink> split(int color, int rank, int) override {
    MPI_Comm sub = MPI_COMM_NULL;
    check_mpi(MPI_Comm_split(comm_, color, rank, &sub), "MPI_Comm_split");
    return std::make_unique<MpiLink>(sub, Adopt{});
  }

 private:
  static constexpr int base_tag = 0x5C0;
  struct Pending {
    Message msg;
    MPI_Request request;
  };
  MPI_Comm comm_ = MPI_COMM_NULL;
  std::deque<Pending> pending_;  // deque: posting never moves a buffer MPI is reading
};

}  // namespace detail

struct MpiNcclOptions {
  /// The CUDA device of this rank; -1: (rank within its node) % (devices on the node).
  int device = -1;
  NcclOptions nccl{};
};

/// Joins every rank of `comm` into one NCCL communicator (collective over `comm`). Makes
/// this rank's device current on the calling thread.
inline Nccl nccl_from_mpi(MPI_Comm comm, MpiNcclOptions options = {}) {
  int rank = 0, size = 0;
  detail::check_mpi(MPI_Comm_rank(comm, &rank), "MPI_Comm_rank");
  detail::check_mpi(MPI_Comm_size(comm, &size), "MPI_Comm_size");
  int device = options.device;
  if (device < 0) {
    MPI_Comm node = MPI_COMM_NULL;
    detail::check_mpi(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node),
                      "MPI_Comm_split_type");
    int local_rank = 0;
    MPI_Comm_rank(node, &local_rank);
    MPI_Comm_free(&node);
    std::string why;
    const int count = device_count(&why);
    if (count == 0)
      throw cuda_error(cudaErrorNoDevice,
                       slowmo::detail::concat("slowmo::cuda::nccl_from_mpi: rank ", rank, " sees no CUDA device (", why,
                                              ")"));
    device = local_rank % count;
  }
  check(cudaSetDevice(device), "cudaSetDevice", "(", device, ") for rank ", rank);
  ncclUniqueId id{};
  if (rank == 0) detail::check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
  detail::check_mpi(MPI_Bcast(&id, int(sizeof id), MPI_BYTE, 0, comm), "MPI_Bcast", " of the NCCL unique id");
  ncclComm_t raw = nullptr;
  detail::check_nccl(ncclCommInitRank(&raw, size, id, rank), "ncclCommInitRank", " (rank ", rank, " of ", size,
                     ", device ", device, ")");
  return Nccl(raw, rank, size, device, std::make_unique<detail::MpiLink>(comm), options.nccl);
}

}  // namespace slowmo::cuda
