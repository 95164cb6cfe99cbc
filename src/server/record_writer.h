// Group commit of the daemon's per-invocation records: writes queue up and are committed many to a
// SQLite transaction (State::batch), so records are not what limits invocations per second.
//
// Durability, as the records need it: a `running` row is committed before its sandbox gets the
// event (commit()), so an invocation running when the daemon is killed is marked lost at restart;
// callers waiting together share one commit. The finish and the stderr tail are queued (submit())
// and committed within max_delay, after the reply: a kill in that window leaves the row `running`,
// so the next start marks it lost although its caller got the result. Readers flush() first and
// see every record whose reply went out.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "server/state.h"
#include "util/error.h"

namespace fnexec::server {

class RecordWriter {
 public:
  using Write = std::function<Result<>(State&)>;

  // A queued write is committed at most max_delay after it was queued, or once max_batch are queued.
  explicit RecordWriter(State& state, std::chrono::microseconds max_delay = std::chrono::milliseconds(2),
                        size_t max_batch = 512);
  ~RecordWriter();  // commits what is queued
  RecordWriter(const RecordWriter&) = delete;
  RecordWriter& operator=(const RecordWriter&) = delete;

  // Queues a write and returns at once; a failure is logged.
  void submit(Write write);
  // Queues a write and returns its result once it is committed.
  Result<> commit(Write write);
  // Returns once every write queued before the call is committed.
  void flush();

  struct Stats {
    uint64_t writes = 0;
    uint64_t transactions = 0;
  };
  Stats stats() const;

 private:
  struct Pending {
    Write write;
    std::shared_ptr<Result<>> result;  // set for commit(); null for submit()
  };
  uint64_t enqueue(Pending p);
  void wait_committed(std::unique_lock<std::mutex>& lock, uint64_t ticket);
  void commit_queue(std::unique_lock<std::mutex>& lock);
  void run();

  State& state_;
  const std::chrono::microseconds max_delay_;
  const size_t max_batch_;
  mutable std::mutex mu_;
  std::condition_variable committed_cv_;  // committed_ advanced or the committer slot is free
  std::condition_variable work_cv_;       // wakes the background committer
  std::vector<Pending> queue_;
  uint64_t queued_ = 0;     // tickets handed out
  uint64_t committed_ = 0;  // every ticket up to it is committed (or failed)
  bool committing_ = false;  // one thread at a time runs a batch; the others wait for it
  bool stopping_ = false;
  Stats stats_;
  std::thread thread_;
};

}  // namespace fnexec::server
