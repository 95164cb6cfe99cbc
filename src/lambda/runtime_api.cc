#include "lambda/runtime_api.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>

#include "sandbox/image_config.h"

namespace fnexec::lambda {

namespace {

const std::string* find_env(const std::vector<std::string>& env, std::string_view key) {
  for (const auto& e : env)
    if (e.size() > key.size() && e.compare(0, key.size(), key) == 0 && e[key.size()] == '=') return &e;
  return nullptr;
}

void set_default(std::vector<std::string>& env, std::string_view key, std::string_view value) {
  if (!find_env(env, key)) env.push_back(std::string(key) + "=" + std::string(value));
}

}  // namespace

std::string function_arn(const FunctionFacts& f) {
  return "arn:aws:lambda:" + f.region + ":000000000000:function:" + f.name;
}

void set_runtime_env(std::vector<std::string>& env, FunctionFacts& f) {
  using sandbox::set_env;
  if (auto* region = find_env(env, "AWS_REGION")) f.region = region->substr(sizeof "AWS_REGION");
  set_default(env, "AWS_REGION", f.region);
  set_default(env, "AWS_DEFAULT_REGION", f.region);
  set_default(env, "TZ", ":UTC");
  set_default(env, "LAMBDA_TASK_ROOT", f.task_root);
  set_default(env, "LAMBDA_RUNTIME_DIR", "/var/runtime");
  set_env(env, "AWS_LAMBDA_RUNTIME_API=" + std::string(kRuntimeApiHost));
  set_env(env, "_HANDLER=" + f.handler);
  set_env(env, "AWS_LAMBDA_FUNCTION_NAME=" + f.name);
  set_env(env, "AWS_LAMBDA_FUNCTION_VERSION=" + std::string(kVersion));
  set_env(env, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=" + std::to_string(f.memory_mb));
  set_env(env, "AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/" + f.name);
  // Fixed per function: the environment is part of a pool's shape, a date in it would drain the pool daily.
  set_env(env, "AWS_LAMBDA_LOG_STREAM_NAME=fnexec/[" + std::string(kVersion) + "]" + f.name);
  set_env(env, "AWS_LAMBDA_INITIALIZATION_TYPE=on-demand");
  set_env(env, "AWS_EXECUTION_ENV=fnexec");
}

std::string default_handler(const std::vector<std::string>& entrypoint, const std::vector<std::string>& cmd) {
  if (!entrypoint.empty()) return cmd.empty() ? std::string() : cmd.front();
  return cmd.size() > 1 ? cmd.back() : std::string();
}

Result<UniqueFd> listen_in_sandbox(int pidfd) {
  UniqueFd own(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!own) return fail_errno("open own network namespace");
  // setns with a pidfd (Linux >= 5.8) saves opening /proc/PID/ns/net.
  if (::setns(pidfd, CLONE_NEWNET) != 0) return fail_errno("enter network namespace of sandbox");
  UniqueFd sock(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  int socket_errno = errno;
  if (::setns(own.get(), CLONE_NEWNET) != 0) {
    // Staying in the sandbox's namespace would silently break everything after: fail hard.
    return fail_errno("return to own network namespace");
  }
  if (!sock) return fail_errno("create the Lambda Runtime API socket in sandbox", {}, socket_errno);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(kRuntimeApiPort);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return fail_errno("bind the Lambda Runtime API", std::string(kRuntimeApiHost) + " in sandbox");
  if (::listen(sock.get(), 16) != 0)
    return fail_errno("listen on", std::string(kRuntimeApiHost) + " in sandbox");
  return sock;
}

}  // namespace fnexec::lambda
