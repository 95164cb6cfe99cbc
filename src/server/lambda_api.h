// AWS Lambda's Invoke API on the daemon (/2015-03-31/...): the AWS SDKs and CLI invoke fnexec
// functions as Lambda functions. It shares the /v1 invocation path (Service::admit, run_admitted,
// enqueue) and answers in Lambda's form: X-Amz-* headers, x-amzn-ErrorType errors.
#pragma once

#include <chrono>
#include <list>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "pool/pool.h"
#include "server/service.h"
#include "util/error.h"

namespace fnexec::server {

// A Lambda service error: x-amzn-ErrorType: TYPE and {"Type":"User"|"Service","message":...}.
Reply lambda_error(unsigned status, std::string_view type, std::string_view message);

// What FunctionName in a path names: name, name:qualifier, ACCOUNT:function:name[:qualifier] or
// arn:aws:lambda:REGION:ACCOUNT:function:name[:qualifier]. ErrorKind::invalid when it breaks Lambda's
// pattern (ValidationException), ErrorKind::not_found for another region or account, or a qualifier
// other than $LATEST (ResourceNotFoundException). qualifier_param: the Qualifier query parameter.
struct FunctionRef {
  std::string name;
  std::string qualifier = "$LATEST";
};
Result<FunctionRef> parse_function_ref(std::string_view text, std::string_view qualifier_param,
                                       const LambdaSettings& settings);

std::string function_arn(const LambdaSettings& settings, std::string_view name);
// 32 hex digits as a UUID (8-4-4-4-12): Lambda's request ids are UUIDs, fnexec's records use the hex.
std::string request_id_of(std::string_view invocation_id);
// Lambda's LastModified: 2026-12-03T01:10:41.000+0000.
std::string lambda_timestamp(int64_t epoch_ms);
// The X-Amz-Log-Result text before base64: START, the event's log, END and a REPORT line with the
// cgroup figures; its last 4 KiB, as Lambda keeps.
std::string tail_log(std::string_view request_id, const pool::InvocationResult& result,
                     const pool::FunctionSpec& spec);
// CodeSha256 of a function whose image has this manifest digest ("sha256:<hex>"): the base64 of the
// digest's 32 bytes, the form Lambda gives a .zip package's SHA-256 in. "" for another algorithm.
std::string code_sha256(std::string_view manifest_digest);
// The FunctionConfiguration document of ListFunctions, GetFunction and GetFunctionConfiguration;
// image: the function's pinned image (CodeSha256, CodeSize), null when it has none.
std::string function_configuration_json(const FunctionView& function, int64_t last_modified_ms,
                                        const LambdaSettings& settings, const FunctionImage* image = nullptr);

// Replies by amz-sdk-invocation-id, so an SDK's retry of a request that already ran (or is still
// running) gets that reply instead of running the function again. Bounded by entries, bytes and age;
// only final replies are kept (a 429 or 5xx did not run the function: its retry runs).
class ReplayCache {
 public:
  struct Limits {
    size_t entries = 1024;
    size_t bytes = size_t{64} << 20;
    std::chrono::seconds ttl{600};
  };
  ReplayCache() : limits_() {}
  explicit ReplayCache(Limits limits) : limits_(limits) {}
  // True: the caller runs the request and must call finish(key, ...). False: respond has been, or
  // will be, called with the reply of the first request of this key.
  bool begin(const std::string& key, Respond& respond);
  void finish(const std::string& key, const Reply& reply);
  size_t size() const;

 private:
  struct Entry {
    bool done = false;
    Reply reply;
    std::vector<Respond> waiters;
    std::chrono::steady_clock::time_point at;
  };
  void evict_locked(std::chrono::steady_clock::time_point now);

  Limits limits_;
  mutable std::mutex mu_;
  std::map<std::string, Entry> entries_;
  std::list<std::string> done_order_;  // finished keys, oldest first
  size_t bytes_ = 0;
};

class LambdaApi {
 public:
  explicit LambdaApi(Service& service) : service_(service) {}
  // Every request below /2015-03-31 (RouteMatch::lambda).
  void handle(Request request, Respond respond);

 private:
  void invoke(Request& request, Respond respond);
  void list_functions(const Request& request, Respond& respond);
  void get_function(const Request& request, Respond& respond, bool configuration_only);

  Service& service_;
  ReplayCache replays_;
};

}  // namespace fnexec::server
