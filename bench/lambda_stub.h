// A bare Lambda Runtime API for benchmarks: one runtime client as a plain host process (no sandbox,
// no fnexec session) and a blocking HTTP/1.1 loop on 127.0.0.1 that hands it events. What a Lambda
// event costs the runtime client itself: the floor beside which protocol lambda is measured.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fnexec::bench {

class StubRuntimeApi {
 public:
  // Starts argv (argv[0] found in PATH) in cwd with AWS_LAMBDA_RUNTIME_API pointing at this stub,
  // _HANDLER=handler and LAMBDA_TASK_ROOT=cwd. nullptr (and a message on stderr) on failure.
  static std::unique_ptr<StubRuntimeApi> start(const std::vector<std::string>& argv, const std::filesystem::path& cwd,
                                               const std::string& handler);
  ~StubRuntimeApi();  // kills and reaps the runtime

  // Answers the runtime's GET .../invocation/next with event; the body of its POST .../response,
  // or nullopt when it sent anything else or hung up.
  std::optional<std::string> invoke(std::string_view event);

  // Where the last invoke()'s time went, in microseconds. answer: from the event written to its POST
  // .../response read, the client's part of the exchange the pool path waits for too; ask: from the
  // previous event's 202 to this event's GET .../next read (the pool path overlaps it with the
  // caller; -1 when the GET was already read or this invoke did not follow the last within 100 us).
  struct ClientTimes {
    double answer_us = 0, ask_us = -1;
  };
  const ClientTimes& last_times() const;

  struct Impl;

 private:
  explicit StubRuntimeApi(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fnexec::bench
