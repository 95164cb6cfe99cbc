// What the daemon's invocation records cost per sync invocation, without sandboxes or HTTP: the
// `running` row, the finish and a stderr tail, from C threads at once, written as before (one
// transaction per write, on the invoking thread) and through RecordWriter (group commit), alternated
// in the same run (A B A B ...).
//
//   fnexec-bench-records [-c THREADS] [-n INVOCATIONS_PER_THREAD] [-r ROUNDS] [--dir DIR]
// DIR (default /var/tmp) holds the SQLite database, as /var/lib/fnexec would.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "server/record_writer.h"
#include "server/state.h"
#include "util/fs.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace fnexec;
using namespace fnexec::server;

struct Round {
  double per_second = 0;  // invocations whose three records were written (queued, for batched)
  double p50_us = 0;      // time an invocation spends in record calls
  double p99_us = 0;
};

server::InvocationEnd end_of(const std::string& id) {
  InvocationEnd e;
  e.id = id;
  e.start = "warm";
  e.outcome = "success";
  e.finished_ms = 2;
  e.wall_us = 150;
  e.billed_ms = 1;
  e.exit_code = 0;
  e.sandbox = {"reuse", "sb-1", 7, std::nullopt, "", "", std::nullopt};
  return e;
}

Round run(State& state, bool batched, int threads, int each, int round) {
  std::vector<std::vector<double>> lat(threads);
  std::unique_ptr<RecordWriter> writer;
  if (batched) writer = std::make_unique<RecordWriter>(state);
  Retention keep;
  auto t0 = Clock::now();
  std::vector<std::thread> ts;
  for (int k = 0; k < threads; ++k)
    ts.emplace_back([&, k] {
      lat[k].reserve(each);
      for (int i = 0; i < each; ++i) {
        auto id = std::to_string(round) + (batched ? "b" : "d") + std::to_string(k) + "-" + std::to_string(i);
        auto s = Clock::now();
        bool ok = true;
        if (batched) {
          ok = bool(writer->commit([&](State& st) { return st.insert_running(id, "f", 1, "reuse"); }));
          writer->submit([e = end_of(id), keep](State& st) { return st.finish(e, keep); });
          writer->submit(
              [id, keep](State& st) { return st.append_log("f", id, 2, "a line of stderr\n", keep); });
        } else {
          ok = state.insert_running(id, "f", 1, "reuse") && state.finish(end_of(id), keep) &&
               state.append_log("f", id, 2, "a line of stderr\n", keep);
        }
        if (!ok) {
          std::fprintf(stderr, "record failed\n");
          std::exit(1);
        }
        lat[k].push_back(std::chrono::duration<double, std::micro>(Clock::now() - s).count());
      }
    });
  for (auto& t : ts) t.join();
  double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  if (writer) writer->flush();
  std::vector<double> all;
  for (auto& l : lat) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  return {static_cast<double>(all.size()) / seconds, all[all.size() / 2], all[all.size() * 99 / 100]};
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 8, each = 2000, rounds = 3;
  std::string dir = "/var/tmp";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "-c")
      threads = std::atoi(argv[i + 1]);
    else if (a == "-n")
      each = std::atoi(argv[i + 1]);
    else if (a == "-r")
      rounds = std::atoi(argv[i + 1]);
    else if (a == "--dir")
      dir = argv[i + 1];
    else {
      std::fprintf(stderr,
                   "usage: fnexec-bench-records [-c THREADS] [-n PER_THREAD] [-r ROUNDS] [--dir DIR]\n");
      return 2;
    }
  }
  auto tmp = fs::TempDir::make(dir, "fnexec-bench-records");
  if (!tmp) {
    std::fprintf(stderr, "%s\n", tmp.error().message().c_str());
    return 1;
  }
  auto state = State::open(tmp->path() / "server.db");
  if (!state) {
    std::fprintf(stderr, "%s\n", state.error().message().c_str());
    return 1;
  }
  std::printf("records per sync invocation (running row, finish, stderr tail), c=%d, %d per thread\n",
              threads, each);
  std::printf("%-38s %12s %10s %10s\n", "mode", "invocations/s", "p50 us", "p99 us");
  for (int r = 0; r < rounds; ++r)
    for (bool batched : {false, true}) {
      auto x = run(**state, batched, threads, each, r);
      std::printf("%-38s %12.0f %10.1f %10.1f\n",
                  batched ? "group commit (RecordWriter)" : "a transaction per write (before)", x.per_second,
                  x.p50_us, x.p99_us);
    }
  return 0;
}
