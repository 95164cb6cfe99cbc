#include "server/lambda_api.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <algorithm>
#include <charconv>
#include <ctime>

#include "server/json.h"
#include "server/uri.h"

namespace fnexec::server {

namespace {

// Code.ResolvedImageUri: the image's repository pinned to the digest it runs ("name@sha256:..."),
// as Lambda resolves a tag to a digest when it creates a function.
std::string resolved_image_uri(std::string_view image, std::string_view digest) {
  if (image.starts_with("sha256:")) return std::string(digest);  // named by its digest already
  auto repository = image.substr(0, image.find('@'));
  auto slash = repository.rfind('/');
  auto colon = repository.rfind(':');
  if (colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash))
    repository = repository.substr(0, colon);  // the tag; a registry's :port comes before a slash
  return std::string(repository) + "@" + std::string(digest);
}

constexpr std::string_view kLatest = "$LATEST";
constexpr size_t kTailBytes = 4096;         // Lambda returns the last 4 KB of the log
constexpr size_t kMaxFunctionRef = 170;     // Invoke's FunctionName limit (an ARN with a qualifier)
constexpr size_t kMaxClientContext = 3583;  // Lambda's limit on X-Amz-Client-Context, base64
constexpr size_t kMaxCognitoIdentity = 1024;
constexpr size_t kMaxTraceId = 256;         // X-Ray's own ids are about 90 characters

#if defined(__aarch64__)
constexpr const char* kArchitecture = "arm64";
#else
constexpr const char* kArchitecture = "x86_64";
#endif

bool all_of(std::string_view s, bool (*ok)(char)) {
  return !s.empty() && std::all_of(s.begin(), s.end(), ok);
}
bool name_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
}
bool qualifier_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
}
bool digit(char c) {
  return c >= '0' && c <= '9';
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  for (size_t i = 0;;) {
    size_t j = s.find(sep, i);
    out.push_back(s.substr(i, j == std::string_view::npos ? std::string_view::npos : j - i));
    if (j == std::string_view::npos) return out;
    i = j + 1;
  }
}

std::string header(const Request& r, std::string_view name) {
  for (const auto& [k, v] : r.headers)
    if (k.size() == name.size() &&
        std::equal(k.begin(), k.end(), name.begin(), [](char a, char b) { return std::tolower(a) == std::tolower(b); }))
      return v;
  return {};
}

bool is_json(std::string_view text) {
  simdjson::dom::parser parser;
  simdjson::padded_string padded(text);
  simdjson::dom::element doc;
  return !parser.parse(padded).get(doc);
}

// A JSON object on one line, or nullopt: it goes into a header of the runtime's next, where a
// newline of pretty-printed JSON would end the header.
std::optional<std::string> one_line_json_object(std::string_view text) {
  simdjson::dom::parser parser;
  simdjson::padded_string padded(text);
  simdjson::dom::element doc;
  if (parser.parse(padded).get(doc) || !doc.is_object()) return std::nullopt;
  return simdjson::minify(doc);
}

bool trace_id_char(char c) {
  return c > 0x20 && c < 0x7f;
}

// A function error's payload: the function's own {errorMessage, errorType} document when it sent
// one, else one made from what fnexec saw (Lambda's names for timeouts, OOM, exits).
std::string function_error_payload(const SyncRun& run, std::string_view request_id) {
  const auto& res = *run.result;
  if (res.error_type == "Function.Error" && res.error_body && is_json(*res.error_body)) return *res.error_body;
  std::string type, message = run.error;
  switch (run.outcome) {
    case Outcome::timeout:
      type = "Sandbox.Timedout";
      message = fmt::format("RequestId: {} Error: Task timed out after {:.2f} seconds", request_id,
                            run.spec.timeout.count() / 1000.0);
      break;
    case Outcome::oom:
      type = "Runtime.OutOfMemory";
      break;
    case Outcome::output_too_large:
      type = "Function.ResponseSizeTooLarge";
      break;
    default:
      type = res.error_type.empty() ? "Runtime.ExitError" : res.error_type;
      if (res.error_type == "Function.Error" && res.error_body) message = *res.error_body;
  }
  JsonWriter w;
  w.begin_object().field("errorMessage", message).field("errorType", type).end_object();
  return w.take();
}

uint64_t memory_mb(const pool::FunctionSpec& spec) {
  // Lambda's largest size stands for "no memory limit": the SDK's MemorySize is always a number.
  return spec.limits.memory_bytes ? *spec.limits.memory_bytes >> 20 : 10240;
}

}  // namespace

Reply lambda_error(unsigned status, std::string_view type, std::string_view message) {
  JsonWriter w;
  w.begin_object().field("Type", status >= 500 ? "Service" : "User").field("message", message).end_object();
  Reply r{status, "application/json", w.take(), {}};
  r.headers.emplace_back("x-amzn-ErrorType", std::string(type));
  return r;
}

std::string function_arn(const LambdaSettings& s, std::string_view name) {
  return fmt::format("arn:aws:lambda:{}:{}:function:{}", s.region, s.account_id, name);
}

Result<FunctionRef> parse_function_ref(std::string_view text, std::string_view qualifier_param,
                                       const LambdaSettings& s) {
  auto invalid = [&](std::string detail) {
    return fail(ErrorKind::invalid, "read FunctionName", std::string(text.substr(0, 200)), std::move(detail));
  };
  if (text.empty() || text.size() > kMaxFunctionRef)
    return invalid(fmt::format("must be 1 to {} characters", kMaxFunctionRef));
  auto parts = split(text, ':');
  std::string_view name, qualifier;
  bool has_qualifier = false;
  if (parts[0] == "arn") {
    if (parts.size() != 7 && parts.size() != 8)
      return invalid("an ARN is arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]");
    if (!parts[1].starts_with("aws") || parts[2] != "lambda" || parts[5] != "function")
      return invalid("an ARN is arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]");
    if (parts[4].size() != 12 || !all_of(parts[4], digit)) return invalid("the account id must be 12 digits");
    if (parts[3] != s.region || parts[4] != s.account_id)
      return fail(ErrorKind::not_found, "find function", std::string(text),
                  fmt::format("this daemon serves region {} account {} (lambda_region, lambda_account_id "
                              "in fnexec.conf)",
                              s.region, s.account_id));
    name = parts[6];
    has_qualifier = parts.size() == 8;
    if (has_qualifier) qualifier = parts[7];
  } else if (parts.size() >= 3 && parts[1] == "function") {
    if (parts.size() > 4 || parts[0].size() != 12 || !all_of(parts[0], digit))
      return invalid("a partial ARN is ACCOUNT:function:NAME[:QUALIFIER]");
    if (parts[0] != s.account_id)
      return fail(ErrorKind::not_found, "find function", std::string(text),
                  fmt::format("this daemon serves account {} (lambda_account_id in fnexec.conf)", s.account_id));
    name = parts[2];
    has_qualifier = parts.size() == 4;
    if (has_qualifier) qualifier = parts[3];
  } else {
    if (parts.size() > 2) return invalid("a name has at most one ':' (NAME:QUALIFIER)");
    name = parts[0];
    has_qualifier = parts.size() == 2;
    if (has_qualifier) qualifier = parts[1];
  }
  if (name.size() > 64 || !all_of(name, name_char))
    return invalid("a function name is 1 to 64 of a-z A-Z 0-9 - _ .");
  if (has_qualifier && qualifier.empty()) return invalid("the qualifier after ':' is empty");
  if (!qualifier.empty() && qualifier != kLatest && (qualifier.size() > 128 || !all_of(qualifier, qualifier_char)))
    return invalid("a qualifier is $LATEST or 1 to 128 of a-z A-Z 0-9 - _");
  if (!qualifier_param.empty() && !qualifier.empty() && qualifier_param != qualifier)
    return invalid("the qualifier in FunctionName does not match the Qualifier parameter");
  FunctionRef ref{std::string(name), std::string(qualifier.empty() ? qualifier_param : qualifier)};
  if (ref.qualifier.empty()) ref.qualifier = kLatest;
  if (ref.qualifier != kLatest)
    return fail(ErrorKind::not_found, "find function", function_arn(s, ref.name) + ":" + ref.qualifier,
                "fnexec serves $LATEST only: versions and aliases are not supported");
  return ref;
}

std::string request_id_of(std::string_view id) {
  if (id.size() != 32) return std::string(id);
  return fmt::format("{}-{}-{}-{}-{}", id.substr(0, 8), id.substr(8, 4), id.substr(12, 4), id.substr(16, 4),
                     id.substr(20));
}

std::string lambda_timestamp(int64_t ms) {
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}+0000", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec, ms % 1000);
}

std::string tail_log(std::string_view request_id, const pool::InvocationResult& res, const pool::FunctionSpec& spec) {
  const auto& rec = res.record;
  std::string text = fmt::format("START RequestId: {} Version: {}\n", request_id, kLatest);
  text += res.log;
  if (!res.log.empty() && res.log.back() != '\n') text += '\n';
  text += fmt::format("END RequestId: {}\n", request_id);
  text += fmt::format("REPORT RequestId: {}\tDuration: {:.2f} ms\tBilled Duration: {} ms\tMemory Size: {} MB\t",
                      request_id, rec.wall_us / 1000.0, billed_ms(rec.wall_us), memory_mb(spec));
  if (rec.memory_peak_bytes) text += fmt::format("Max Memory Used: {} MB\t", (*rec.memory_peak_bytes + (1 << 20) - 1) >> 20);
  if (res.init_us) text += fmt::format("Init Duration: {:.2f} ms\t", *res.init_us / 1000.0);
  text += '\n';
  if (text.size() > kTailBytes) text.erase(0, text.size() - kTailBytes);
  return text;
}

std::string code_sha256(std::string_view manifest_digest) {
  constexpr std::string_view kAlgorithm = "sha256:";
  if (!manifest_digest.starts_with(kAlgorithm) || manifest_digest.size() != kAlgorithm.size() + 64) return {};
  std::string bytes;
  for (size_t i = kAlgorithm.size(); i < manifest_digest.size(); i += 2) {
    int hi = hex_digit(manifest_digest[i]), lo = hex_digit(manifest_digest[i + 1]);
    if (hi < 0 || lo < 0) return {};
    bytes += static_cast<char>(hi << 4 | lo);
  }
  return base64_encode(bytes);
}

std::string function_configuration_json(const FunctionView& f, int64_t last_modified_ms, const LambdaSettings& s,
                                        const FunctionImage* image) {
  const auto& spec = f.spec;
  JsonWriter w;
  w.begin_object();
  w.field("FunctionName", spec.name).field("FunctionArn", function_arn(s, spec.name));
  w.field("PackageType", "Image").field("CodeSize", image ? image->size : int64_t{0});
  if (image) w.field("CodeSha256", code_sha256(image->digest));
  w.field("Description", "");
  w.field("Timeout", static_cast<uint64_t>((spec.timeout.count() + 999) / 1000));
  w.field("MemorySize", memory_mb(spec));
  w.field("LastModified", lambda_timestamp(last_modified_ms));
  w.field("Version", kLatest);
  w.field("State", f.error.empty() ? "Active" : "Failed");
  if (!f.error.empty()) w.field("StateReason", f.error).field("StateReasonCode", "InternalError");
  w.field("LastUpdateStatus", "Successful");
  w.key("Architectures").begin_array().value(kArchitecture).end_array();
  w.key("Environment").begin_object().key("Variables").begin_object();
  for (const auto& kv : spec.env) {
    auto eq = kv.find('=');
    w.field(kv.substr(0, eq), eq == std::string::npos ? std::string() : kv.substr(eq + 1));
  }
  w.end_object().end_object();
  w.key("ImageConfigResponse").begin_object().key("ImageConfig").begin_object();
  if (spec.entrypoint) w.field("EntryPoint", *spec.entrypoint);
  if (spec.cmd) w.field("Command", *spec.cmd);
  if (!spec.workdir.empty()) w.field("WorkingDirectory", spec.workdir);
  w.end_object().end_object();
  w.end_object();
  return w.take();
}

bool ReplayCache::begin(const std::string& key, Respond& respond) {
  std::unique_lock lock(mu_);
  auto now = std::chrono::steady_clock::now();
  evict_locked(now);
  auto [it, inserted] = entries_.try_emplace(key);
  if (inserted) {
    it->second.at = now;
    return true;
  }
  if (!it->second.done) {
    it->second.waiters.push_back(std::move(respond));
    return false;
  }
  Reply stored = it->second.reply;
  lock.unlock();
  respond(std::move(stored));
  return false;
}

void ReplayCache::finish(const std::string& key, const Reply& reply) {
  std::vector<Respond> waiters;
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(key);
    if (it == entries_.end()) return;
    waiters = std::move(it->second.waiters);
    bool final_reply = reply.status < 500 && reply.status != 429;
    if (final_reply) {
      it->second.done = true;
      it->second.reply = reply;
      it->second.at = std::chrono::steady_clock::now();
      bytes_ += reply.body.size();
      done_order_.push_back(key);
      evict_locked(it->second.at);
    } else {
      entries_.erase(it);
    }
  }
  for (auto& w : waiters) w(reply);
}

void ReplayCache::evict_locked(std::chrono::steady_clock::time_point now) {
  while (!done_order_.empty()) {
    auto it = entries_.find(done_order_.front());
    bool over = done_order_.size() > limits_.entries || bytes_ > limits_.bytes;
    if (it != entries_.end() && !over && now - it->second.at < limits_.ttl) break;
    if (it != entries_.end()) {
      bytes_ -= it->second.reply.body.size();
      entries_.erase(it);
    }
    done_order_.pop_front();
  }
}

size_t ReplayCache::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

void LambdaApi::handle(Request request, Respond respond) {
  // Every reply carries a request id, errors included, as Lambda's do.
  Respond with_id = [respond = std::move(respond)](Reply reply) {
    bool has = std::any_of(reply.headers.begin(), reply.headers.end(),
                           [](const auto& h) { return h.first == "x-amzn-RequestId"; });
    if (!has) reply.headers.emplace_back("x-amzn-RequestId", request_id_of(new_invocation_id()));
    respond(std::move(reply));
  };
  const auto& m = request.match;
  switch (m.route) {
    case Route::lambda_invoke:
      return invoke(request, std::move(with_id));
    case Route::lambda_functions_list:
      return list_functions(request, with_id);
    case Route::lambda_function_get:
      return get_function(request, with_id, false);
    case Route::lambda_function_config:
      return get_function(request, with_id, true);
    case Route::bad_request:
      return with_id(lambda_error(400, "InvalidRequestContentException", m.error));
    case Route::method_not_allowed: {
      auto r = lambda_error(405, "MethodNotAllowedException",
                            fmt::format("{} is not allowed here; allowed: {}", request.method, m.allow));
      r.headers.emplace_back("Allow", m.allow);
      return with_id(std::move(r));
    }
    default:
      return with_id(lambda_error(404, "UnknownOperationException",
                                  "fnexec serves Invoke, ListFunctions, GetFunction and GetFunctionConfiguration "
                                  "of the Lambda API"));
  }
}

namespace {

Reply ref_error(const Error& e) {
  if (e.kind == ErrorKind::not_found)
    return lambda_error(404, "ResourceNotFoundException", fmt::format("Function not found: {} ({})", e.on, e.detail));
  return lambda_error(400, "ValidationException", e.message());
}

}  // namespace

void LambdaApi::get_function(const Request& request, Respond& respond, bool configuration_only) {
  auto settings = service_.limits().lambda;
  const auto& q = request.match.query;
  auto ref = parse_function_ref(request.match.param, q.contains("Qualifier") ? q.at("Qualifier") : "", settings);
  if (!ref) return respond(ref_error(ref.error()));
  auto view = validate_function_name(ref->name) ? service_.function(ref->name) : std::nullopt;
  auto stored = view ? service_.state().get_function(ref->name) : Result<std::optional<StoredFunction>>{};
  if (!stored) return respond(lambda_error(500, "ServiceException", stored.error().message()));
  if (!view || !*stored)
    return respond(lambda_error(404, "ResourceNotFoundException",
                                "Function not found: " + function_arn(settings, ref->name)));
  auto images = service_.function_images(ref->name);
  if (!images) return respond(lambda_error(500, "ServiceException", images.error().message()));
  auto image = images->find(ref->name);
  const FunctionImage* pinned = image == images->end() ? nullptr : &image->second;
  auto config = function_configuration_json(*view, (*stored)->updated_ms, settings, pinned);
  if (configuration_only) return respond(Reply{200, "application/json", std::move(config), {}});
  JsonWriter w;
  w.begin_object().key("Configuration").raw(config);
  w.key("Code").begin_object().field("RepositoryType", "fnexec").field("ImageUri", view->spec.image);
  if (pinned) w.field("ResolvedImageUri", resolved_image_uri(view->spec.image, pinned->digest));
  w.end_object();
  w.key("Concurrency").begin_object().field("ReservedConcurrentExecutions", view->spec.max_concurrency).end_object();
  w.key("Tags").begin_object().end_object();
  w.end_object();
  respond(Reply{200, "application/json", w.take(), {}});
}

void LambdaApi::list_functions(const Request& request, Respond& respond) {
  auto settings = service_.limits().lambda;
  const auto& q = request.match.query;
  auto max_items = query_uint(q, "MaxItems", 50, 10000);
  if (!max_items || *max_items == 0)
    return respond(lambda_error(400, "InvalidParameterValueException", "MaxItems must be between 1 and 10000"));
  std::string marker = q.contains("Marker") ? q.at("Marker") : "";
  auto stored = service_.state().list_functions();
  if (!stored) return respond(lambda_error(500, "ServiceException", stored.error().message()));
  auto images = service_.function_images();
  if (!images) return respond(lambda_error(500, "ServiceException", images.error().message()));
  std::sort(stored->begin(), stored->end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  JsonWriter w;
  w.begin_object().key("Functions").begin_array();
  uint64_t n = 0;
  std::string last;  // the last name on this page: where the next one starts (NextMarker)
  bool more = false;
  for (const auto& f : *stored) {
    if (!marker.empty() && f.name <= marker) continue;
    auto view = service_.function(f.name);
    if (!view) continue;
    if (n == *max_items) {
      more = true;
      break;
    }
    auto image = images->find(f.name);
    w.raw(function_configuration_json(*view, f.updated_ms, settings,
                                      image == images->end() ? nullptr : &image->second));
    last = f.name;
    ++n;
  }
  w.end_array();
  if (more) w.field("NextMarker", last);
  w.end_object();
  respond(Reply{200, "application/json", w.take(), {}});
}

namespace {

// The RequestResponse reply of a sync run, local or forwarded to another node of the cluster.
Reply sync_reply(SyncRun run, bool tail, const LambdaSettings& settings, const std::string& name) {
  auto request_id = request_id_of(run.id);
  if (!run.result) {
    Reply r = run.result.error().kind == ErrorKind::unavailable
                  ? lambda_error(429, "TooManyRequestsException", "Rate Exceeded: " + run.error)
                  : run.result.error().kind == ErrorKind::not_found
                        ? lambda_error(404, "ResourceNotFoundException", "Function not found: " + function_arn(settings, name))
                        : lambda_error(500, "ServiceException", run.error);
    if (r.status == 429) r.headers.emplace_back("Retry-After", "1");
    if (!run.id.empty()) r.headers.emplace_back("x-amzn-RequestId", request_id);
    return r;
  }
  if (run.outcome == Outcome::setup_error) {
    auto r = lambda_error(500, "ServiceException", run.error);
    r.headers.emplace_back("x-amzn-RequestId", request_id);
    return r;
  }
  // The function ran: 200 whatever it did, or the SDK would retry and run it again.
  Reply r{200, "application/json", {}, {}};
  if (run.outcome == Outcome::success) {
    r.body = std::move(run.result->output);
  } else {
    r.body = function_error_payload(run, request_id);
    r.headers.emplace_back("X-Amz-Function-Error", "Unhandled");
  }
  r.headers.emplace_back("x-amzn-RequestId", request_id);
  r.headers.emplace_back("X-Amz-Executed-Version", std::string(kLatest));
  if (tail) r.headers.emplace_back("X-Amz-Log-Result", base64_encode(tail_log(request_id, *run.result, run.spec)));
  return r;
}

}  // namespace

void LambdaApi::invoke(Request& request, Respond respond) {
  auto settings = service_.limits().lambda;
  const auto& q = request.match.query;
  auto ref = parse_function_ref(request.match.param, q.contains("Qualifier") ? q.at("Qualifier") : "", settings);
  if (!ref) return respond(ref_error(ref.error()));

  std::string type = header(request, "X-Amz-Invocation-Type");
  if (type.empty()) type = "RequestResponse";
  if (type != "RequestResponse" && type != "Event" && type != "DryRun")
    return respond(lambda_error(400, "ValidationException",
                                fmt::format("X-Amz-Invocation-Type '{}' is not one of RequestResponse, Event, DryRun",
                                            type.substr(0, 64))));
  std::string log_type = header(request, "X-Amz-Log-Type");
  if (!log_type.empty() && log_type != "None" && log_type != "Tail")
    return respond(lambda_error(400, "ValidationException",
                                fmt::format("X-Amz-Log-Type '{}' is not None or Tail", log_type.substr(0, 64))));
  // What the runtime's next carries beside the event (Lambda-Runtime-Client-Context, ...).
  invoke::EventContext context;
  if (auto encoded = header(request, "X-Amz-Client-Context"); !encoded.empty()) {
    auto decoded = encoded.size() <= kMaxClientContext ? base64_decode(encoded) : std::nullopt;
    auto object = decoded ? one_line_json_object(*decoded) : std::nullopt;
    if (!object)
      return respond(lambda_error(
          400, "InvalidRequestContentException",
          fmt::format("X-Amz-Client-Context must be a base64 JSON object of at most {} characters; got {} "
                      "characters{}",
                      kMaxClientContext, encoded.size(),
                      encoded.size() > kMaxClientContext ? ""
                      : !decoded                         ? " that are not base64"
                                                         : " whose decoded text is not a JSON object")));
    context.client_context = std::move(*object);
  }
  if (auto identity = header(request, "Fnexec-Cognito-Identity"); !identity.empty()) {
    auto object = identity.size() <= kMaxCognitoIdentity ? one_line_json_object(identity) : std::nullopt;
    if (!object)
      return respond(lambda_error(400, "InvalidRequestContentException",
                                  fmt::format("Fnexec-Cognito-Identity must be a JSON object "
                                              "({{\"cognitoIdentityId\":...,\"cognitoIdentityPoolId\":...}}) "
                                              "of at most {} characters",
                                              kMaxCognitoIdentity)));
    context.cognito_identity = std::move(*object);
  }
  context.trace_id = header(request, "X-Amzn-Trace-Id");
  if (!context.trace_id.empty() && (context.trace_id.size() > kMaxTraceId || !all_of(context.trace_id, trace_id_char)))
    return respond(lambda_error(400, "InvalidRequestContentException",
                                fmt::format("X-Amzn-Trace-Id must be at most {} printable ASCII characters without "
                                            "spaces (Root=1-...;Parent=...;Sampled=...)",
                                            kMaxTraceId)));
  // Lambda's payload is JSON; an empty one is the empty object, as Lambda hands it to the function.
  if (request.body.empty()) request.body = "{}";
  if (!is_json(request.body))
    return respond(lambda_error(400, "InvalidRequestContentException",
                                "Could not parse request body into json: the payload must be one JSON document"));

  const std::string& name = ref->name;
  if (!validate_function_name(name) || !service_.function(name))
    return respond(lambda_error(404, "ResourceNotFoundException", "Function not found: " + function_arn(settings, name)));
  if (service_.stopping()) return respond(lambda_error(503, "ServiceException", "the daemon is shutting down"));
  if (type == "DryRun") {
    Reply r{204, "application/json", {}, {}};
    r.headers.emplace_back("X-Amz-Executed-Version", std::string(kLatest));
    return respond(std::move(r));
  }

  // One run per SDK invocation id: the SDK sends the same id on every retry of one call.
  std::string sdk_id = header(request, "amz-sdk-invocation-id");
  std::string key;
  if (!sdk_id.empty() && sdk_id.size() <= 128) {
    key = fmt::format("{}\n{}\n{}\n{}", request.principal, name, type, sdk_id);
    if (!replays_.begin(key, respond)) return;
    respond = [this, key, respond = std::move(respond)](Reply reply) {
      replays_.finish(key, reply);
      respond(std::move(reply));
    };
  }

  if (type == "Event") {
    return service_.enqueue(
        name, std::move(request.body),
        [respond = std::move(respond)](Result<std::string> id) {
          if (!id) return respond(lambda_error(500, "ServiceException", id.error().message()));
          Reply r{202, "application/json", {}, {}};
          r.headers.emplace_back("x-amzn-RequestId", request_id_of(*id));
          r.headers.emplace_back("X-Amz-Executed-Version", std::string(kLatest));
          respond(std::move(r));
        },
        std::move(context));
  }

  auto admitted = service_.admit(name);
  switch (admitted.status) {
    case Admission::admitted:
      break;
    case Admission::stopping:
      return respond(lambda_error(503, "ServiceException", admitted.message));
    case Admission::not_ready:
      return respond(lambda_error(502, "ResourceNotReadyException", admitted.message));
    case Admission::no_function:
      return respond(lambda_error(404, "ResourceNotFoundException", "Function not found: " + function_arn(settings, name)));
    case Admission::function_busy:
    case Admission::daemon_busy: {
      // Cluster mode: another node may have a slot (answered as if run here).
      if (service_.forward_sync(
              name, request.body, admitted.message,
              [respond, tail = log_type == "Tail", settings, name](SyncRun run) {
                respond(sync_reply(std::move(run), tail, settings, name));
              },
              context))
        return;
      auto r = lambda_error(429, "TooManyRequestsException", "Rate Exceeded: " + admitted.message);
      r.headers.emplace_back("Retry-After", "1");
      return respond(std::move(r));
    }
  }
  bool tail = log_type == "Tail";
  service_.run_admitted(name, std::move(request.body), [respond = std::move(respond), tail, settings, name](SyncRun run) {
    respond(sync_reply(std::move(run), tail, settings, name));
  }, std::move(context));
}

}  // namespace fnexec::server
