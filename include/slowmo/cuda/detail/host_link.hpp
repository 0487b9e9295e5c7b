// slowmo/cuda/detail/host_link.hpp — the host side of the NCCL communicator: the small
// messages and agreements that travel between the workers' host threads, never waiting for
// a GPU. They carry the push-sum weight of an exchange (a host scalar in the Communicator
// concept), the sizes that validate exchanges and collectives before NCCL is asked to do
// them, and barriers. Two implementations: in-process (LocalHub, for several GPUs driven
// by threads of one process) and MPI (slowmo/cuda/nccl_mpi.hpp).
#pragma once

#include <algorithm>
#include <array>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "slowmo/core/error.hpp"

namespace slowmo::cuda::detail {

/// One worker's end of the host channel.
class HostLink {
 public:
  using Message = std::array<double, 2>;
  enum Tag : int { exchange_header = 0, exchange_expect = 1, tag_count = 2 };

  virtual ~HostLink() = default;
  /// Sends `msg` to worker `dest` under `tag`; returns without waiting for the receiver.
  virtual void post(int dest, Tag tag, const Message& msg) = 0;
  /// The next message from worker `source` under `tag`, waiting for it if need be.
  virtual Message take(int source, Tag tag) = 0;
  /// Waits until the messages posted so far may be forgotten (MPI: their sends completed).
  virtual void complete_posts() {}
  /// v = element-wise maximum of v over all workers; every worker calls it in the same order.
  virtual void all_max(std::span<std::int64_t> v) = 0;
  /// Collective: the host channel of this worker's group after a split, where it is `rank`
  /// of `size` workers of color `color` (every worker has computed its place from everyone's
  /// color and key, as MPI_Comm_split ranks them).
  virtual std::unique_ptr<HostLink> split(int color, int rank, int size) = 0;
};

/// The shared state of the in-process host channel of m workers: mailboxes per (source,
/// destination, tag), and a rendezvous for all_max. abort() releases every waiting worker
/// with a comm_error (a worker failed; nobody may wait for it any more).
class LocalHub {
 public:
  explicit LocalHub(int workers)
      : m_(workers), boxes_(std::size_t(workers) * std::size_t(workers) * HostLink::tag_count) {}

  int size() const { return m_; }

  void post(int from, int to, HostLink::Tag tag, const HostLink::Message& msg) {
    {
      std::lock_guard lock(mutex_);
      box(from, to, tag).push_back(msg);
    }
    cv_.notify_all();
  }

  HostLink::Message take(int self, int from, HostLink::Tag tag) {
    std::unique_lock lock(mutex_);
    auto& q = box(from, self, tag);
    cv_.wait(lock, [&] { return !q.empty() || !abort_reason_.empty(); });
    if (q.empty()) throw_aborted(self, concat("a message from worker ", from));
    const HostLink::Message msg = q.front();
    q.pop_front();
    return msg;
  }

  void all_max(int self, std::span<std::int64_t> v) {
    std::unique_lock lock(mutex_);
    if (!abort_reason_.empty()) throw_aborted(self, "the other workers");
    if (arrived_ == 0) {
      acc_.assign(v.begin(), v.end());
    } else {
      if (acc_.size() != v.size())
        throw comm_error(concat("slowmo::cuda: host channel: worker ", self, " agrees on ", v.size(),
                                " values where others agree on ", acc_.size()));
      for (std::size_t i = 0; i < v.size(); ++i) acc_[i] = std::max(acc_[i], v[i]);
    }
    if (++arrived_ == m_) {
      result_ = acc_;
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
    } else {
      const std::uint64_t gen = generation_;
      cv_.wait(lock, [&] { return generation_ != gen || !abort_reason_.empty(); });
      if (generation_ == gen) throw_aborted(self, "the other workers");
    }
    std::copy(result_.begin(), result_.end(), v.begin());
  }

  /// Worker `who` failed with `why`: every current and future wait throws, here and in the
  /// hubs of the groups split from this one.
  void abort(int who, const std::string& why) {
    std::vector<std::shared_ptr<LocalHub>> children;
    {
      std::lock_guard lock(mutex_);
      if (abort_reason_.empty()) {
        abort_reason_ = concat("worker ", who, " failed: ", why);
        first_failure_ = who;
      }
      for (auto& c : children_)
        if (auto h = c.lock()) children.push_back(std::move(h));
    }
    cv_.notify_all();
    for (auto& c : children) c->abort(who, why);
  }
  /// The hub of the group of color `color` made by every worker's nth split of this hub: the
  /// first of its `size` members to arrive makes it, the others take it.
  std::shared_ptr<LocalHub> split(std::uint64_t nth, int color, int size) {
    std::lock_guard lock(mutex_);
    Split& s = splits_[{nth, color}];
    if (!s.hub) {
      s.hub = std::make_shared<LocalHub>(size);
      s.hub->abort_reason_ = abort_reason_;  // (its own mutex is not shared yet)
      s.hub->first_failure_ = first_failure_;
      children_.push_back(s.hub);
    }
    std::shared_ptr<LocalHub> hub = s.hub;
    if (++s.taken == size) splits_.erase({nth, color});
    return hub;
  }
  /// The worker whose abort() came first, or -1.
  int first_failure() const {
    std::lock_guard lock(mutex_);
    return first_failure_;
  }
  bool aborted() const {
    std::lock_guard lock(mutex_);
    return !abort_reason_.empty();
  }

 private:
  std::deque<HostLink::Message>& box(int from, int to, HostLink::Tag tag) {
    return boxes_[(std::size_t(from) * std::size_t(m_) + std::size_t(to)) * HostLink::tag_count + std::size_t(tag)];
  }
  [[noreturn]] void throw_aborted(int self, const std::string& waiting_for) const {
    throw comm_error(concat("slowmo::cuda: worker ", self, " stopped waiting for ", waiting_for, ": ", abort_reason_));
  }
  template <class... P>
  static std::string concat(const P&... p) {
    return slowmo::detail::concat(p...);
  }

  const int m_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::deque<HostLink::Message>> boxes_;
  std::vector<std::int64_t> acc_, result_;
  int arrived_ = 0;
  std::uint64_t generation_ = 0;
  std::string abort_reason_;
  int first_failure_ = -1;
  struct Split {
    std::shared_ptr<LocalHub> hub;
    int taken = 0;
  };
  std::map<std::pair<std::uint64_t, int>, Split> splits_;  // splits under way, by (nth split, color)
  std::vector<std::weak_ptr<LocalHub>> children_;
};

/// Worker `rank`'s end of a LocalHub.
class LocalLink final : public HostLink {
 public:
  LocalLink(std::shared_ptr<LocalHub> hub, int rank) : hub_(std::move(hub)), rank_(rank) {}
  void post(int dest, Tag tag, const Message& msg) override { hub_->post(rank_, dest, tag, msg); }
  Message take(int source, Tag tag) override { return hub_->take(rank_, source, tag); }
  void all_max(std::span<std::int64_t> v) override { hub_->all_max(rank_, v); }
  std::unique_ptr<HostLink> split(int color, int rank, int size) override {
    return std::make_unique<LocalLink>(hub_->split(splits_++, color, size), rank);
  }

 private:
  std::shared_ptr<LocalHub> hub_;
  int rank_;
  std::uint64_t splits_ = 0;  // how many times this worker split this hub
};

}  // namespace slowmo::cuda::detail
