// The Lambda Runtime API's fixed facts (man 7 fnexec-protocol, "The lambda protocol"): where the
// runtime finds it, the environment a Lambda runtime requires, and its listening socket, made in
// the sandbox's own network namespace.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "util/error.h"
#include "util/unique_fd.h"

namespace fnexec::lambda {

// The runtime clients take host:port only and connect over TCP (their bundled curl has no unix
// sockets), so the API lives on the sandbox's own loopback.
inline constexpr uint16_t kRuntimeApiPort = 9001;
inline constexpr std::string_view kRuntimeApiHost = "127.0.0.1:9001";
inline constexpr std::string_view kVersion = "$LATEST";

// What a Lambda runtime reads about its function, from its environment and the next event's headers.
struct FunctionFacts {
  std::string name;
  std::string handler;    // _HANDLER
  std::string task_root;  // LAMBDA_TASK_ROOT
  uint64_t memory_mb = 0;
  std::string region = "us-east-1";  // AWS_REGION unless the function's env sets it
};

// arn:aws:lambda:REGION:000000000000:function:NAME (account 0: no account exists here).
std::string function_arn(const FunctionFacts& f);

// Sets AWS_LAMBDA_RUNTIME_API, _HANDLER and the AWS_LAMBDA_FUNCTION_* variables Lambda reserves;
// LAMBDA_TASK_ROOT, LAMBDA_RUNTIME_DIR, AWS_REGION, AWS_DEFAULT_REGION and TZ only where the image
// or the function does not set them. facts.region becomes the region the environment ends up with.
void set_runtime_env(std::vector<std::string>& env, FunctionFacts& facts);

// _HANDLER when the function gives none: Lambda's images pass it as their CMD, so the first
// argument after the entrypoint.
std::string default_handler(const std::vector<std::string>& entrypoint, const std::vector<std::string>& cmd);

// A non-blocking TCP socket listening on 127.0.0.1:9001 in the network namespace of the process
// behind pidfd (its lo must be up). The calling thread enters that namespace only to create the
// socket (a socket's namespace is fixed at creation) and is back in its own before this returns.
Result<UniqueFd> listen_in_sandbox(int pidfd);

}  // namespace fnexec::lambda
