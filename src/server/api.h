// The daemon's HTTP API without the network: routes, names, request documents, outcomes.
// Pure functions, so the unit tests cover them without a socket.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "pool/pool.h"
#include "util/error.h"

namespace fnexec::server {

enum class Route {
  healthz,
  metrics,
  functions_list,    // GET /v1/functions
  function_put,      // PUT /v1/functions/{name}
  function_get,      // GET /v1/functions/{name}
  function_delete,   // DELETE /v1/functions/{name}
  function_invoke,   // POST /v1/functions/{name}/invoke
  function_logs,     // GET /v1/functions/{name}/logs
  invocations_list,  // GET /v1/invocations
  invocation_get,    // GET /v1/invocations/{id}
  dead_letters_list,   // GET /v1/dead-letters
  dead_letter_get,     // GET /v1/dead-letters/{id}
  dead_letter_delete,  // DELETE /v1/dead-letters/{id}
  dead_letter_replay,  // POST /v1/dead-letters/{id}/replay
  images_list,       // GET /v1/images
  images_import,     // POST /v1/images
  images_pull,       // POST /v1/images/pull (src/server/pulls.h)
  images_pull_get,   // GET /v1/images/pulls/{id}
  cluster_status,    // GET /v1/cluster
  // Lambda's Invoke API (lambda_api.h); match.lambda is set for every path below /2015-03-31.
  lambda_functions_list,   // GET /2015-03-31/functions/
  lambda_function_get,     // GET /2015-03-31/functions/{name}
  lambda_function_config,  // GET /2015-03-31/functions/{name}/configuration
  lambda_invoke,           // POST /2015-03-31/functions/{name}/invocations
  not_found,
  method_not_allowed,
  bad_request,  // a query string that does not decode
};

struct RouteMatch {
  Route route = Route::not_found;
  std::string param;  // {name} or {id}, percent-decoded
  std::map<std::string, std::string> query;
  std::string allow;  // for method_not_allowed: the methods the path accepts
  std::string error;  // for bad_request
  bool lambda = false;  // below /2015-03-31: errors in Lambda's form (x-amzn-ErrorType)
};

RouteMatch route(std::string_view method, std::string_view target);

// [a-z0-9][a-z0-9_.-]{0,62}; the error says which rule the name breaks.
Result<> validate_function_name(std::string_view name);

// What a PUT body leaves out of the lifecycle fields: fnexec.conf(5) default_* keys. Stored specs
// carry every field, so these apply once, when a function is created or replaced.
struct FunctionDefaults {
  pool::Lifecycle lifecycle = pool::Lifecycle::oneshot;
  uint32_t max_events_per_sandbox = 0;  // applies to reuse functions only
  std::chrono::milliseconds init_timeout{10000};
  std::chrono::seconds idle_timeout{600};
  // Security defaults for functions that do not say (fnexec.conf default_*).
  std::string user;
  bool read_only_rootfs = false;
  std::vector<std::string> cap_drop;
  std::string seccomp_profile;
  std::optional<uint64_t> nofile;
  uint64_t pids_limit = 256;
  std::string egress_default = "allow";  // network bridge: fnexec.conf default_egress
  bool userns = true;  // default_userns: daemon functions get their own user namespace unless they say not
};

// Bounds on one function document (fnexec.conf max_* keys), so that a PUT costs memory and time in
// proportion to what a real function needs: Lambda allows 4 KiB of environment in all.
struct FunctionLimits {
  uint64_t max_function_bytes = 1 << 20;  // the PUT body
  uint64_t max_array_entries = 4096;      // entries of entrypoint, of cmd
  uint64_t max_argv_bytes = 256 << 10;    // entrypoint and cmd together
  uint64_t max_env_entries = 1024;
  uint64_t max_env_bytes = 64 << 10;  // "K=V" bytes in all
};

// PUT /v1/functions/{name} body → FunctionSpec with defaults filled in. Unknown fields, wrong types
// and out-of-range values are ErrorKind::invalid with a message naming the field; a document over
// one of limits is ErrorKind::too_large naming the field and the fnexec.conf key.
Result<pool::FunctionSpec> parse_function_spec(std::string_view name, std::string_view json,
                                               const FunctionDefaults& defaults = {},
                                               const FunctionLimits& limits = {});
// The stored and returned form; parse_function_spec(name, function_spec_json(s)) == s.
std::string function_spec_json(const pool::FunctionSpec& spec);

// text as it is when it is one JSON document (a function's error json), else as a JSON string.
std::string json_or_string(std::string_view text);

// Billed duration: wall time rounded UP to the next whole millisecond (0 µs bills 0 ms).
uint64_t billed_ms(uint64_t wall_us);

// How an invocation ended, as records and metrics label it.
enum class Outcome { success, error, timeout, oom, output_too_large, setup_error, rejected, failed, lost };
std::string_view to_string(Outcome o);
Outcome classify(const pool::InvocationResult& r);
// HTTP status of a sync invocation that ran: 200, 502 or 504.
unsigned http_status(Outcome o);
// HTTP status for an Error of the daemon or a module (invalid → 400, not_found → 404, ...).
unsigned http_status(const Error& e);

// What the Lambda API (lambda_api.h) puts in ARNs: fnexec.conf lambda_region, lambda_account_id.
struct LambdaSettings {
  std::string region = "us-east-1";
  std::string account_id = "000000000000";
};

// Unsigned decimal query parameter with a range check; absent → fallback.
Result<uint64_t> query_uint(const std::map<std::string, std::string>& query, const std::string& key,
                            uint64_t fallback, uint64_t max);

}  // namespace fnexec::server
