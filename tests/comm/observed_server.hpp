// A shared-model server for the in-process tests: x = decay * x + d, recording which
// worker's push it applied, in order, with the staleness the backend gave it, and leaving its final parameters behind when the
// backend destroys it (after every worker's function, at the end of run()). Only the
// server that rank 0 passes is given the record (the backend keeps rank 0's).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include <slowmo/core/shared_model.hpp>

namespace comm_test {

template <class T>
struct Observed {
  std::vector<int> order;  // the worker of each update, in the order applied
  std::vector<std::int64_t> staleness;  // and its staleness, as the server was told
  std::vector<T> final;    // the parameters when the server was destroyed
  bool destroyed = false;
};

template <class T>
class ObservedServer final : public slowmo::ModelServer<T> {
 public:
  ObservedServer(std::vector<T> x0, Observed<T>* record, T decay = T(1))
      : x_(std::move(x0)), record_(record), decay_(decay) {}
  ~ObservedServer() override {
    if (!record_) return;
    record_->final = x_;
    record_->destroyed = true;
  }
  std::size_t size() const override { return x_.size(); }
  void apply(const slowmo::Arrival& arrival, std::span<const T> d) override {
    for (std::size_t i = 0; i < x_.size(); ++i) x_[i] = decay_ * x_[i] + d[i];
    if (!record_) return;
    record_->order.push_back(arrival.worker);
    record_->staleness.push_back(arrival.staleness);
  }
  void read(std::span<T> out) const override { std::copy(x_.begin(), x_.end(), out.begin()); }

 private:
  std::vector<T> x_;
  Observed<T>* record_;
  T decay_;
};

}  // namespace comm_test
