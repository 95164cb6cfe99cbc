#include "server/record_writer.h"

#include "util/log.h"

namespace fnexec::server {

RecordWriter::RecordWriter(State& state, std::chrono::microseconds max_delay, size_t max_batch)
    : state_(state), max_delay_(max_delay), max_batch_(max_batch), thread_([this] { run(); }) {}

RecordWriter::~RecordWriter() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_one();
  thread_.join();
}

uint64_t RecordWriter::enqueue(Pending p) {
  queue_.push_back(std::move(p));
  // The committer sleeps until the first write of a batch arrives, or a full batch is waiting.
  if (queue_.size() == 1 || queue_.size() == max_batch_) work_cv_.notify_one();
  return ++queued_;
}

void RecordWriter::submit(Write write) {
  std::lock_guard lock(mu_);
  enqueue({std::move(write), nullptr});
}

Result<> RecordWriter::commit(Write write) {
  auto result = std::make_shared<Result<>>();
  std::unique_lock lock(mu_);
  uint64_t ticket = enqueue({std::move(write), result});
  wait_committed(lock, ticket);
  return *result;
}

void RecordWriter::flush() {
  std::unique_lock lock(mu_);
  wait_committed(lock, queued_);
}

RecordWriter::Stats RecordWriter::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

// The first waiter to find no batch running commits the whole queue on its own thread (no hand-off
// when the daemon is idle); waiters arriving meanwhile queue behind it and share the next commit.
void RecordWriter::wait_committed(std::unique_lock<std::mutex>& lock, uint64_t ticket) {
  while (committed_ < ticket) {
    if (!committing_)
      commit_queue(lock);
    else
      committed_cv_.wait(lock);
  }
}

void RecordWriter::commit_queue(std::unique_lock<std::mutex>& lock) {
  committing_ = true;
  std::vector<Pending> batch;
  batch.swap(queue_);
  uint64_t upto = queued_;
  lock.unlock();
  std::vector<Write> writes;
  writes.reserve(batch.size());
  for (auto& p : batch) writes.push_back(std::move(p.write));
  auto results = state_.batch(writes);
  for (size_t i = 0; i < batch.size(); ++i) {
    Result<> r = results ? std::move((*results)[i]) : Result<>(std::unexpected(results.error()));
    if (batch[i].result)
      *batch[i].result = std::move(r);
    else if (!r)
      spdlog::error("invocation record not stored: {}", r.error().message());
  }
  lock.lock();
  stats_.writes += batch.size();
  if (!batch.empty()) ++stats_.transactions;
  committed_ = upto;
  committing_ = false;
  committed_cv_.notify_all();
}

void RecordWriter::run() {
  std::unique_lock lock(mu_);
  for (;;) {
    work_cv_.wait(lock, [&] { return stopping_ || committed_ < queued_; });
    if (stopping_ && committed_ == queued_ && !committing_) return;
    // Let a batch gather, unless it is full or the daemon stops.
    work_cv_.wait_for(lock, max_delay_, [&] { return stopping_ || queue_.size() >= max_batch_; });
    wait_committed(lock, queued_);
  }
}

}  // namespace fnexec::server
