// The daemon's pieces that need no socket: routes, names, request documents, JSON, metrics text,
// config, and the SQLite state (migrations, records, recovery, retention).
#include <doctest/doctest.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cmath>
#include <cstring>
#include <regex>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "sandbox/devices.h"
#include "sandbox/image_config.h"
#include "server/api.h"
#include "server/config.h"
#include "server/isolation.h"
#include "server/json.h"
#include "server/metrics.h"
#include "server/pulls.h"
#include "server/state.h"
#include "support/state_v4.h"
#include "util/fs.h"

using namespace fnexec;
using namespace fnexec::server;

TEST_CASE("routes: paths, methods, parameters and queries") {
  CHECK(route("GET", "/healthz").route == Route::healthz);
  CHECK(route("GET", "/metrics").route == Route::metrics);
  CHECK(route("GET", "/v1/functions").route == Route::functions_list);
  CHECK(route("GET", "/v1/functions/").route == Route::functions_list);
  auto put = route("PUT", "/v1/functions/hello");
  CHECK(put.route == Route::function_put);
  CHECK(put.param == "hello");
  CHECK(route("GET", "/v1/functions/hello").route == Route::function_get);
  CHECK(route("DELETE", "/v1/functions/hello").route == Route::function_delete);
  auto inv = route("POST", "/v1/functions/hello/invoke?mode=async");
  CHECK(inv.route == Route::function_invoke);
  CHECK(inv.param == "hello");
  CHECK(inv.query.at("mode") == "async");
  auto logs = route("GET", "/v1/functions/f1/logs?since=5&limit=10");
  CHECK(logs.route == Route::function_logs);
  CHECK(logs.query.at("since") == "5");
  CHECK(logs.query.at("limit") == "10");
  auto list = route("GET", "/v1/invocations?function=a%2Db&limit=3");
  CHECK(list.route == Route::invocations_list);
  CHECK(list.query.at("function") == "a-b");
  CHECK(route("GET", "/v1/invocations/abc").param == "abc");
  CHECK(route("GET", "/v1/images").route == Route::images_list);
  CHECK(route("POST", "/v1/images/pull").route == Route::images_pull);
  CHECK(route("GET", "/v1/images/pull").route == Route::method_not_allowed);
  auto pull_get = route("GET", "/v1/images/pulls/0a1b");
  CHECK(pull_get.route == Route::images_pull_get);
  CHECK(pull_get.param == "0a1b");
  CHECK(route("POST", "/v1/images?name=x%3A1").query.at("name") == "x:1");
  CHECK(route("HEAD", "/healthz").route == Route::healthz);

  auto wrong = route("POST", "/v1/functions/hello");
  CHECK(wrong.route == Route::method_not_allowed);
  CHECK(wrong.allow == "GET, PUT, DELETE");
  CHECK(route("GET", "/v1/functions/hello/invoke").route == Route::method_not_allowed);
  CHECK(route("GET", "/").route == Route::not_found);
  CHECK(route("GET", "/v2/functions").route == Route::not_found);
  CHECK(route("GET", "/v1/functions/a/b/c").route == Route::not_found);
  CHECK(route("GET", "/v1/nothing").route == Route::not_found);
  auto bad = route("GET", "/v1/invocations?limit=%zz");
  CHECK(bad.route == Route::bad_request);
  CHECK(bad.error.find("%zz") != std::string::npos);
  CHECK(route("GET", "/v1/functions/a%2").route == Route::bad_request);
}

TEST_CASE("pull requests: the reference is required, the rest optional, mistakes named") {
  auto ok = parse_pull_request(R"({"reference":"docker://127.0.0.1:5000/a/b:1","name":"x:2","platform":"linux/arm64/v8","tls_verify":false})");
  REQUIRE(ok);
  CHECK(ok->reference == "docker://127.0.0.1:5000/a/b:1");
  CHECK(ok->name == "x:2");
  CHECK(ok->platform == "linux/arm64/v8");
  CHECK(!ok->tls_verify);
  CHECK(parse_pull_request(R"({"reference":"alpine"})")->tls_verify);
  for (auto [body, said] : {std::pair{"[]", "not a JSON object"}, {"{}", "'reference' is missing"},
                            {R"({"reference":"a","creds":"u:p"})", "unknown field 'creds'"},
                            {R"({"reference":"a","tls_verify":"no"})", "tls_verify must be true or false"},
                            {R"({"reference":"Bad/Ref"})", "repository"},
                            {R"({"reference":"a","platform":"linux"})", "OS/ARCH"}}) {
    auto bad = parse_pull_request(body);
    REQUIRE(!bad);
    CHECK_MESSAGE(bad.error().message().find(said) != std::string::npos, bad.error().message());
  }
}

TEST_CASE("function names") {
  for (const char* ok : {"a", "hello", "0x", "a-b_c.d", "fn.v2"})
    CHECK_MESSAGE(validate_function_name(ok), ok);
  CHECK(validate_function_name(std::string(63, 'a')));
  auto why = [](std::string_view n) { return validate_function_name(n).error().message(); };
  CHECK(why("").find("empty") != std::string::npos);
  CHECK(why(std::string(64, 'a')).find("64 characters") != std::string::npos);
  CHECK(why("Hello").find("starts with 'H'") != std::string::npos);
  CHECK(why("-a").find("starts with '-'") != std::string::npos);
  CHECK(why(".a").find("starts with '.'") != std::string::npos);
  CHECK(why("a/b").find("'/' is not allowed") != std::string::npos);
  CHECK(why("a b").find("' ' is not allowed") != std::string::npos);
  CHECK(why("aB").find("'B' is not allowed") != std::string::npos);
}

TEST_CASE("function documents: defaults and every field") {
  auto min = parse_function_spec("f", R"({"image":"hello:latest"})");
  REQUIRE(min);
  CHECK(min->name == "f");
  CHECK(min->image == "hello:latest");
  CHECK(*min->limits.memory_bytes == 256u << 20);
  CHECK(*min->limits.cpus == 1.0);
  CHECK(*min->limits.pids == 256);
  CHECK(min->timeout.count() == 30000);
  CHECK(min->min_warm == 1);
  CHECK(min->max_concurrency == 16);
  CHECK(!min->entrypoint);
  CHECK(!min->cmd);

  auto full = parse_function_spec("g", R"({"image":"x","entrypoint":["/bin/sh","-c"],"cmd":["echo hi"],
      "env":{"A":"1","B":"x=y"},"workdir":"/srv","user":"1000:1000","memory_mb":64,"cpus":0.5,
      "pids_limit":32,"timeout_ms":1500,"min_warm":0,"max_concurrency":4,"idle_timeout_s":60,
      "max_output_bytes":1024,"max_log_bytes":512})");
  REQUIRE(full);
  CHECK(*full->entrypoint == std::vector<std::string>{"/bin/sh", "-c"});
  CHECK(*full->cmd == std::vector<std::string>{"echo hi"});
  CHECK(full->env == std::vector<std::string>{"A=1", "B=x=y"});
  CHECK(full->workdir == "/srv");
  CHECK(full->user == "1000:1000");
  CHECK(*full->limits.memory_bytes == 64u << 20);
  CHECK(*full->limits.cpus == 0.5);
  CHECK(*full->limits.pids == 32);
  CHECK(full->timeout.count() == 1500);
  CHECK(full->min_warm == 0);
  CHECK(full->max_concurrency == 4);
  CHECK(full->idle_timeout.count() == 60);
  CHECK(full->max_output_bytes == 1024);
  CHECK(full->max_log_bytes == 512);

  // The stored form parses back to the same spec.
  auto again = parse_function_spec("g", function_spec_json(*full));
  REQUIRE(again);
  CHECK(function_spec_json(*again) == function_spec_json(*full));
  auto env_list = parse_function_spec("h", R"({"image":"x","env":["K=V"],"entrypoint":null})");
  REQUIRE(env_list);
  CHECK(env_list->env == std::vector<std::string>{"K=V"});
}

TEST_CASE("function documents: each mistake is named") {
  auto why = [](std::string_view json) {
    auto r = parse_function_spec("f", json);
    REQUIRE(!r);
    CHECK(r.error().kind == ErrorKind::invalid);
    return r.error().message();
  };
  CHECK(why(R"({"image":)").find("malformed JSON") != std::string::npos);
  CHECK(why("").find("malformed JSON") != std::string::npos);
  CHECK(why("[1]").find("expected a JSON object, got an array") != std::string::npos);
  CHECK(why("{}").find("\"image\" is required") != std::string::npos);
  CHECK(why(R"({"image":""})").find("\"image\" must not be empty") != std::string::npos);
  CHECK(why(R"({"image":"x","memroy_mb":5})").find("unknown field \"memroy_mb\"") != std::string::npos);
  CHECK(why(R"({"image":5})").find("\"image\" must be a string, got an integer") != std::string::npos);
  CHECK(why(R"({"image":"x","memory_mb":"64"})").find("\"memory_mb\" must be an integer, got a string") !=
        std::string::npos);
  CHECK(why(R"({"image":"x","memory_mb":1.5})").find("must be an integer, got a number") !=
        std::string::npos);
  CHECK(why(R"({"image":"x","memory_mb":-1})").find("\"memory_mb\" must be at least 4") != std::string::npos);
  CHECK(why(R"({"image":"x","memory_mb":2})").find("between 4 and") != std::string::npos);
  CHECK(why(R"({"image":"x","cpus":0})").find("\"cpus\" must be above 0") != std::string::npos);
  CHECK(why(R"({"image":"x","cpus":"1"})").find("\"cpus\" must be a number") != std::string::npos);
  CHECK(why(R"({"image":"x","timeout_ms":0})").find("\"timeout_ms\"") != std::string::npos);
  CHECK(why(R"({"image":"x","cmd":"echo"})").find("\"cmd\" must be an array of strings, got a string") !=
        std::string::npos);
  CHECK(why(R"({"image":"x","cmd":[1]})").find("has an integer") != std::string::npos);
  CHECK(why(R"({"image":"x","env":["NOEQUALS"]})").find("\"NOEQUALS\" is not KEY=VALUE") !=
        std::string::npos);
  CHECK(why(R"({"image":"x","env":{"A":1}})").find("value of \"A\" must be a string") != std::string::npos);
  CHECK(why(R"({"image":"x","workdir":"rel"})").find("absolute path") != std::string::npos);
  CHECK(why(R"({"image":"x","min_warm":5,"max_concurrency":2})").find("must not exceed max_concurrency") !=
        std::string::npos);
  CHECK(why(R"({"image":"x","image":"y"})").find("given twice") != std::string::npos);
  CHECK(why(R"({"image":"x","name":"other"})").find("URL names \"f\"") != std::string::npos);
  CHECK(why(R"({"image":"x","max_concurrency":0})").find("\"max_concurrency\"") != std::string::npos);
  CHECK(!parse_function_spec("Bad", R"({"image":"x"})"));
}

TEST_CASE("function documents: network fields, checked as fnexec run checks its flags") {
  auto f = parse_function_spec("n", R"({"image":"x","network":"bridge","dns":["10.0.0.53"],
      "add_hosts":["db:10.9.8.7"],"egress_allow":["10.1.0.0/16:443"],"egress_deny":["10.2.0.0/16"],
      "egress_default":"deny"})");
  REQUIRE(f);
  CHECK(f->network.mode == "bridge");
  CHECK(f->network.add_hosts == std::vector<std::string>{"db:10.9.8.7"});
  CHECK(f->network.egress_default == "deny");
  auto again = parse_function_spec("n", function_spec_json(*f));
  REQUIRE(again);
  CHECK(again->network == f->network);
  // A function that says nothing gets network none and fnexec.conf's default_egress.
  FunctionDefaults defaults;
  defaults.egress_default = "deny";
  auto plain = parse_function_spec("p", R"({"image":"x","network":"bridge"})", defaults);
  REQUIRE(plain);
  CHECK(plain->network.egress_default == "deny");
  CHECK(parse_function_spec("p", R"({"image":"x"})")->network.mode == "none");

  auto why = [](std::string_view json) {
    auto r = parse_function_spec("f", json);
    REQUIRE(!r);
    CHECK(r.error().kind == ErrorKind::invalid);
    return r.error().message();
  };
  CHECK(why(R"({"image":"x","network":"host"})").find("must be none (loopback only) or bridge") != std::string::npos);
  CHECK(why(R"({"image":"x","dns":["10.0.0.1"]})").find("apply to network bridge only") != std::string::npos);
  CHECK(why(R"({"image":"x","network":"bridge","egress_deny":["10.0.0.1/8"]})").find("host bits are set") !=
        std::string::npos);
  CHECK(why(R"({"image":"x","network":"bridge","egress_allow":["10.0.0.0/8:99999"]})").find("egress port") !=
        std::string::npos);
  CHECK(why(R"({"image":"x","network":"bridge","egress_default":"maybe"})").find("expected allow or deny") !=
        std::string::npos);
  CHECK(why(R"({"image":"x","network":"bridge","add_hosts":["nocolon"]})").find("expected NAME:IP") !=
        std::string::npos);
  CHECK(why(R"({"image":"x","network":"bridge","dns":"10.0.0.1"})").find("\"dns\" must be an array") !=
        std::string::npos);
}

TEST_CASE("function documents: every count and size is bounded, and the error names the config key") {
  FunctionLimits limits{.max_function_bytes = 4096,
                        .max_array_entries = 3,
                        .max_argv_bytes = 10,
                        .max_env_entries = 2,
                        .max_env_bytes = 12};
  auto why = [&](std::string_view json) {
    auto r = parse_function_spec("f", json, {}, limits);
    REQUIRE(!r);
    CHECK(r.error().kind == ErrorKind::too_large);
    CHECK(http_status(r.error()) == 413);
    return r.error().message();
  };
  CHECK(why(R"({"image":"x","cmd":["a","b","c","d"]})") ==
        "cannot accept function: field \"cmd\" has 4 entries, over the limit of 3 (max_array_entries in "
        "fnexec.conf)");
  CHECK(why(R"({"image":"x","entrypoint":["a","b","c","d"]})").find("max_array_entries") != std::string::npos);
  CHECK(why(R"({"image":"x","entrypoint":["123456"],"cmd":["12345"]})").find("11 bytes, over the limit of 10 "
                                                                            "(max_argv_bytes") != std::string::npos);
  CHECK(why(R"({"image":"x","env":["A=1","B=2","C=3"]})").find("3 entries, over the limit of 2 (max_env_entries") !=
        std::string::npos);
  CHECK(why(R"({"image":"x","env":{"A":"1","B":"2","C":"3"}})").find("max_env_entries") != std::string::npos);
  CHECK(why(R"({"image":"x","env":["A=1234567","B=12345"]})").find("16 bytes, over the limit of 12 (max_env_bytes") !=
        std::string::npos);
  CHECK(why(R"({"image":")" + std::string(5000, 'x') + "\"}").find("over the limit of 4096 (max_function_bytes") !=
        std::string::npos);
  // At the limits exactly: accepted.
  auto ok = parse_function_spec("f", R"({"image":"x","entrypoint":["a","b"],"cmd":["c"],"env":["A=1234","B=1234"]})",
                                {}, limits);
  CHECK_MESSAGE(ok, ok.error().message());
  // The defaults take Lambda's 4 KiB of environment comfortably.
  std::string env = "[";
  for (int i = 0; i < 64; ++i) env += fmt::format(R"({}"K{}={}")", i ? "," : "", i, std::string(100, 'v'));
  auto lambda_sized = parse_function_spec("f", R"({"image":"x","env":)" + env + "]}");
  CHECK_MESSAGE(lambda_sized, lambda_sized.error().message());
}

TEST_CASE("env merge: later values replace earlier keys, in linear time") {
  std::vector<std::string> env = {"PATH=/bin", "A=1"};
  sandbox::merge_env(env, {"A=2", "B=3", "PATH=/usr/bin", "B=4", "EMPTY="});
  CHECK(env == std::vector<std::string>{"PATH=/usr/bin", "A=2", "B=4", "EMPTY="});
  // 200k distinct keys took 48 s with a scan per entry; a hash set makes this instant.
  std::vector<std::string> many;
  for (int i = 0; i < 200000; ++i) many.push_back(fmt::format("K{}={}", i, i));
  std::vector<std::string> base = {"PATH=/bin"};
  sandbox::merge_env(base, many);
  CHECK(base.size() == 200001);
  CHECK(base.back() == "K199999=199999");
}

TEST_CASE("billed duration rounds up to whole milliseconds") {
  CHECK(billed_ms(0) == 0);
  CHECK(billed_ms(1) == 1);
  CHECK(billed_ms(999) == 1);
  CHECK(billed_ms(1000) == 1);
  CHECK(billed_ms(1001) == 2);
  CHECK(billed_ms(1999) == 2);
  CHECK(billed_ms(2000) == 2);
  CHECK(billed_ms(123456789) == 123457);
}

TEST_CASE("outcomes and their status codes") {
  pool::InvocationResult r;
  CHECK(classify(r) == Outcome::success);
  r.record.exit_code = 3;
  CHECK(classify(r) == Outcome::error);
  r.record.exit_code = 0;
  r.record.signal = 9;
  CHECK(classify(r) == Outcome::error);
  r.record.oom_killed = true;
  CHECK(classify(r) == Outcome::oom);
  r.record.timed_out = true;
  CHECK(classify(r) == Outcome::timeout);
  r.output_too_large = true;
  CHECK(classify(r) == Outcome::output_too_large);
  pool::InvocationResult s;
  s.record.exit_code = 127;
  s.record.setup_error = Error{ErrorKind::not_found, ENOENT, "exec", "/nope", {}};
  CHECK(classify(s) == Outcome::setup_error);
  CHECK(http_status(Outcome::success) == 200);
  CHECK(http_status(Outcome::error) == 502);
  CHECK(http_status(Outcome::oom) == 502);
  CHECK(http_status(Outcome::output_too_large) == 502);
  CHECK(http_status(Outcome::timeout) == 504);
  CHECK(http_status(Error{ErrorKind::invalid}) == 400);
  CHECK(http_status(Error{ErrorKind::not_found}) == 404);
  CHECK(http_status(Error{ErrorKind::unavailable}) == 503);
}

TEST_CASE("query integers") {
  std::map<std::string, std::string> q{{"limit", "20"}, {"bad", "2x"}, {"neg", "-1"}, {"big", "5000"}};
  CHECK(*query_uint(q, "limit", 5, 100) == 20);
  CHECK(*query_uint(q, "absent", 5, 100) == 5);
  CHECK(query_uint(q, "bad", 5, 100).error().message().find("'2x' is not an unsigned integer") !=
        std::string::npos);
  CHECK(!query_uint(q, "neg", 5, 100));
  CHECK(query_uint(q, "big", 5, 100).error().message().find("above the maximum 100") != std::string::npos);
}

TEST_CASE("JSON writer escapes what JSON requires and repairs invalid UTF-8") {
  CHECK(json_string("a\"b\\c\n\t\x01") == R"("a\"b\\c\n\t\u0001")");
  CHECK(json_string("caf\xc3\xa9") == "\"caf\xc3\xa9\"");
  CHECK(json_string("\xff\xfe") == "\"\xEF\xBF\xBD\xEF\xBF\xBD\"");
  CHECK(json_string("\xc3") == "\"\xEF\xBF\xBD\"");                                  // truncated sequence
  CHECK(json_string("\xed\xa0\x80") == "\"\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\"");  // surrogate
  JsonWriter w;
  w.begin_object().field("a", 1).field("b", std::vector<std::string>{"x", "y"}).key("c").null();
  w.field("d", std::optional<uint64_t>{}).field("e", true).key("f").begin_object().end_object().end_object();
  CHECK(w.str() == R"({"a":1,"b":["x","y"],"c":null,"d":null,"e":true,"f":{}})");
  CHECK(json_error("x \"y\"") == R"({"error":"x \"y\""})");
}

namespace {

// A small checker of the Prometheus text format (0.0.4): every sample belongs to a declared family,
// names and labels are well formed, values parse, histogram buckets are cumulative and end in +Inf.
std::map<std::string, double> parse_prometheus(const std::string& text) {
  static const std::regex sample(R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)$)");
  static const std::regex label(R"re(^[a-zA-Z_][a-zA-Z0-9_]*="((?:[^"\\\n]|\\[\\"n])*)"$)re");
  std::map<std::string, std::string> types;
  std::map<std::string, double> samples;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    REQUIRE(!line.empty());
    if (line.starts_with("# TYPE ")) {
      std::istringstream t(line.substr(7));
      std::string name, type;
      t >> name >> type;
      CHECK(std::set<std::string>{"counter", "gauge", "histogram"}.contains(type));
      types[name] = type;
      continue;
    }
    if (line.starts_with("# HELP ")) continue;
    std::smatch m;
    REQUIRE_MESSAGE(std::regex_match(line, m, sample), line);
    std::string name = m[1];
    std::string family = name;
    for (const char* suffix : {"_bucket", "_sum", "_count"})
      if (!types.contains(family) && family.ends_with(suffix))
        family = family.substr(0, family.size() - strlen(suffix));
    CHECK_MESSAGE(types.contains(family), line);
    // Labels: split on commas outside quotes.
    std::string labels = m[3];
    std::string cur;
    bool quoted = false;
    for (size_t i = 0; i <= labels.size(); ++i) {
      char c = i < labels.size() ? labels[i] : ',';
      if (c == '\\' && quoted && i + 1 < labels.size()) {
        cur += c;
        cur += labels[++i];
        continue;
      }
      if (c == '"') quoted = !quoted;
      if (c == ',' && !quoted) {
        if (!cur.empty()) CHECK_MESSAGE(std::regex_match(cur, label), cur);
        cur.clear();
      } else {
        cur += c;
      }
    }
    std::string value = m[4];
    double v = value == "+Inf" ? INFINITY : std::stod(value);
    samples[name + (m[2].matched ? std::string(m[2]) : "")] = v;
  }
  return samples;
}

}  // namespace

TEST_CASE("base64: RFC 4648 vectors, every length round-trips, malformed text is refused") {
  for (auto [plain, coded] : std::vector<std::pair<std::string, std::string>>{{"", ""},
                                                                              {"f", "Zg=="},
                                                                              {"fo", "Zm8="},
                                                                              {"foo", "Zm9v"},
                                                                              {"foob", "Zm9vYg=="},
                                                                              {"fooba", "Zm9vYmE="},
                                                                              {"foobar", "Zm9vYmFy"}}) {
    CHECK(base64_encode(plain) == coded);
    CHECK(base64_decode(coded) == plain);
  }
  std::string bytes;
  for (int i = 0; i < 300; ++i) {
    bytes.push_back(static_cast<char>((i * 167 + 13) & 0xFF));
    CHECK(base64_decode(base64_encode(bytes)) == bytes);
  }
  CHECK(base64_encode(std::string("\xFF\xFE\x00", 3)) == "//4A");
  for (const char* bad : {"Zg=", "Zg=a", "Z===", "Zm9v!A==", "=Zm9", "Zg==Zg=="})
    CHECK_MESSAGE(!base64_decode(bad), bad);
  CHECK(is_valid_utf8("plain \xC3\xA9 \xF0\x9F\x98\x80"));
  CHECK(!is_valid_utf8("\xC3"));
  CHECK(!is_valid_utf8("\xED\xA0\x80"));  // a surrogate
  CHECK(!is_valid_utf8("\xC0\xAF"));      // overlong
}

TEST_CASE("Prometheus text: families, labels, cumulative histogram") {
  Metrics metrics;
  metrics.count("hello", Outcome::success);
  metrics.count("hello", Outcome::success);
  metrics.count("hello", Outcome::timeout);
  metrics.count("we\"ird\\name\n", Outcome::error);
  metrics.observe("hello", pool::StartKind::warm, 700);       // 0.7 ms
  metrics.observe("hello", pool::StartKind::cold, 20000);     // 20 ms
  metrics.observe("hello", pool::StartKind::warm, 90000000);  // 90 s: only +Inf
  auto snap = metrics.snapshot();
  snap.pools.push_back({"hello", 2, 1, 0});
  snap.pools.push_back({"other", 1, 0, 3});
  snap.cgroup_mode = "v1";
  snap.async_queued = 4;
  auto text = format_prometheus(snap);
  auto s = parse_prometheus(text);
  CHECK(s.at(R"(fnexec_invocations_total{function="hello",outcome="success"})") == 2);
  CHECK(s.at(R"(fnexec_invocations_total{function="hello",outcome="timeout"})") == 1);
  CHECK(s.at(R"(fnexec_invocations_total{function="we\"ird\\name\n",outcome="error"})") == 1);
  CHECK(s.at(R"(fnexec_starts_total{kind="warm"})") == 2);
  CHECK(s.at(R"(fnexec_starts_total{kind="cold"})") == 1);
  CHECK(s.at(R"(fnexec_invocation_duration_seconds_bucket{function="hello",le="0.0005"})") == 0);
  CHECK(s.at(R"(fnexec_invocation_duration_seconds_bucket{function="hello",le="0.001"})") == 1);
  CHECK(s.at(R"(fnexec_invocation_duration_seconds_bucket{function="hello",le="0.025"})") == 2);
  CHECK(s.at(R"(fnexec_invocation_duration_seconds_bucket{function="hello",le="60"})") == 2);
  CHECK(s.at(R"(fnexec_invocation_duration_seconds_bucket{function="hello",le="+Inf"})") == 3);
  CHECK(s.at(R"(fnexec_invocation_duration_seconds_count{function="hello"})") == 3);
  CHECK(s.at(R"(fnexec_invocation_duration_seconds_sum{function="hello"})") == doctest::Approx(90.0207));
  CHECK(s.at(R"(fnexec_pool_sandboxes{function="hello",state="warm"})") == 2);
  CHECK(s.at(R"(fnexec_pool_sandboxes{function="other",state="starting"})") == 3);
  CHECK(s.at("fnexec_sandboxes_alive") == 7);
  CHECK(s.at("fnexec_async_queued") == 4);
  CHECK(s.at(R"(fnexec_cgroup_mode{mode="v1"})") == 1);
}

TEST_CASE("config: key = value lines, flags after the file, checked values") {
  auto settings = parse_config_text(
      "# comment\n\nsocket = /run/x.sock\nlisten=127.0.0.1:9000 # trailing\nmax_event_bytes = 1m\n"
      "shutdown_grace = 2s\nsocket_mode = 0600\nlog_level = debug\n",
      "test.conf");
  REQUIRE(settings);
  CHECK(settings->size() == 6);
  CHECK((*settings)[1].origin == "test.conf:4");
  ServeConfig c;
  settings->push_back({"socket", "/run/flag.sock", "--socket"});
  REQUIRE(apply_settings(c, *settings));
  CHECK(c.socket == "/run/flag.sock");
  CHECK(c.listen == "127.0.0.1:9000");
  CHECK(c.max_event_bytes == 1u << 20);
  CHECK(c.shutdown_grace.count() == 2000);
  CHECK(c.socket_mode == 0600);
  CHECK(c.log_level == "debug");

  auto unknown = parse_config_text("sokcet = /x\n", "f.conf");
  REQUIRE(!unknown);
  CHECK(unknown.error().message().find("f.conf:1") != std::string::npos);
  CHECK(unknown.error().message().find("unknown key 'sokcet'") != std::string::npos);
  CHECK(!parse_config_text("just words\n", "f.conf"));
  auto bad = [](std::string key, std::string value) {
    ServeConfig c;
    return apply_settings(c, {{std::move(key), std::move(value), "t:1"}});
  };
  CHECK(!bad("socket", "relative.sock"));
  CHECK(!bad("listen", "8080"));
  CHECK(!bad("socket_mode", "999"));
  CHECK(!bad("cgroups", "maybe"));
  CHECK(!bad("shutdown_grace", "soon"));
  CHECK(!bad("max_sandboxes", "0"));
  CHECK(!bad("cgroup_prefix", "a/b"));
  CHECK(bad("shutdown_grace", "250ms"));
  CHECK(ServeConfig{}.request_idle_timeout.count() == 60000);
  ServeConfig idle;
  REQUIRE(apply_settings(idle, {{"request_idle_timeout", "2s", "t:1"}}));
  CHECK(idle.request_idle_timeout.count() == 2000);
  CHECK(!bad("request_idle_timeout", "0"));
  CHECK(!is_restart_only("request_idle_timeout"));
  auto limits = parse_config_text("max_function_bytes = 2m\nmax_array_entries = 10\nmax_argv_bytes = 4k\n"
                                  "max_env_entries = 5\nmax_env_bytes = 1k\n",
                                  "limits.conf");
  REQUIRE(limits);
  ServeConfig lc;
  REQUIRE(apply_settings(lc, *limits));
  CHECK(lc.function_limits.max_function_bytes == 2u << 20);
  CHECK(lc.function_limits.max_array_entries == 10);
  CHECK(lc.function_limits.max_argv_bytes == 4096);
  CHECK(lc.function_limits.max_env_entries == 5);
  CHECK(lc.function_limits.max_env_bytes == 1024);
  CHECK(!bad("max_function_bytes", "0"));
  CHECK(!bad("max_array_entries", "lots"));
  CHECK(!is_restart_only("max_env_bytes"));
  CHECK(parse_config_text("request_idle_timeout = 5s\n", "f.conf"));
  CHECK(is_restart_only("socket"));
  CHECK(!is_restart_only("log_level"));
  CHECK(parse_millis("3m")->count() == 180000);
  CHECK(parse_millis("15")->count() == 15000);
  CHECK(parse_millis("1.5s")->count() == 1500);
  CHECK(!parse_millis("1.5 fortnights"));
}

namespace {

struct TempDb {
  fs::TempDir dir = *fs::TempDir::make("/tmp", "fnexec-unit-state");
  std::filesystem::path path = dir.path() / "server.db";
};

int user_tables(const std::filesystem::path& db) {
  sqlite3* h = nullptr;
  sqlite3_open(db.c_str(), &h);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(h, "SELECT count(*) FROM sqlite_master WHERE type = 'table'", -1, &st, nullptr);
  sqlite3_step(st);
  int n = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(h);
  return n;
}

}  // namespace

TEST_CASE("config: bridge, bridge_subnet, bridge_subnet6 and default_egress") {
  ServeConfig c;
  CHECK(c.bridge_subnet6 == "none");
  REQUIRE(apply_settings(c, {{"bridge", "fxbr1", "t:1"}, {"bridge_subnet", "10.99.0.0/24", "t:2"},
                             {"default_egress", "deny", "t:3"}, {"bridge_subnet6", "fd87:6e78:1f00::/64", "t:4"}}));
  CHECK(c.bridge_subnet6 == "fd87:6e78:1f00::/64");
  CHECK(is_restart_only("bridge_subnet6"));
  CHECK(c.bridge == "fxbr1");
  CHECK(c.bridge_subnet == "10.99.0.0/24");
  CHECK(c.function_defaults.egress_default == "deny");
  CHECK(is_restart_only("bridge"));
  CHECK(is_restart_only("bridge_subnet"));
  CHECK(!is_restart_only("default_egress"));
  auto bad = [&](const char* key, const char* value) {
    auto r = apply_settings(c, {{key, value, "t:9"}});
    REQUIRE(!r);
    return r.error().message();
  };
  CHECK(bad("bridge", "has space").find("interface name") != std::string::npos);
  CHECK(bad("bridge_subnet", "10.0.0.1/8").find("host bits are set") != std::string::npos);
  CHECK(bad("bridge_subnet", "10.0.0.0/31").find("/30 or larger") != std::string::npos);
  CHECK(bad("bridge_subnet6", "fd00::/112").find("/96 or larger") != std::string::npos);
  CHECK(bad("bridge_subnet6", "fd00::1/64").find("host bits are set") != std::string::npos);
  CHECK(bad("default_egress", "maybe").find("must be allow or deny") != std::string::npos);
}

TEST_CASE("config: cluster_replicas, 1 by default, 1 to 5") {
  ServeConfig c;
  CHECK(c.cluster.replicas == 1);
  REQUIRE(apply_settings(c, {{"cluster_nats", "nats://127.0.0.1:4222,nats://127.0.0.1:4223", "t:1"},
                             {"cluster_replicas", "3", "t:2"}}));
  CHECK(c.cluster.replicas == 3);
  CHECK(is_restart_only("cluster_replicas"));
  for (const char* value : {"0", "6", "three", "3x", ""}) {
    auto r = apply_settings(c, {{"cluster_replicas", value, "t:9"}});
    REQUIRE(!r);
    CHECK(r.error().message().find("must be 1 to 5") != std::string::npos);
  }
}

TEST_CASE("state: migrations from an empty database, then idempotent") {
  TempDb t;
  {
    auto s = State::open(t.path);
    REQUIRE(s);
    CHECK(*(*s)->schema_version() == kSchemaVersion);
  }
  int tables = user_tables(t.path);
  CHECK(tables == 8);  // schema_version, functions, invocations, async_payloads, logs, dead_letters, id_ranges, pulls
  {
    auto s = State::open(t.path);
    REQUIRE(s);
    CHECK(*(*s)->schema_version() == kSchemaVersion);
    REQUIRE(*(*s)->put_function("f", "{}", 1));
  }
  CHECK(user_tables(t.path) == tables);
  auto s = State::open(t.path);
  REQUIRE(s);
  CHECK((*s)->get_function("f").value().has_value());

  // The daemon holds the database exclusively while it runs.
  sqlite3* h = nullptr;
  sqlite3_open(t.path.c_str(), &h);
  sqlite3_busy_timeout(h, 10);
  CHECK(sqlite3_exec(h, "UPDATE schema_version SET version = 99", nullptr, nullptr, nullptr) == SQLITE_BUSY);
  s->reset();
  // A database from a newer fnexec is refused, not downgraded.
  REQUIRE(sqlite3_exec(h, "UPDATE schema_version SET version = 99", nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(h);
  auto newer = State::open(t.path);
  REQUIRE(!newer);
  CHECK(newer.error().message().find("schema version 99 is newer") != std::string::npos);
}

TEST_CASE("state: registry pulls outlive a restart; one still running is failed as interrupted, the newest kept") {
  TempDb t;
  {
    auto s = State::open(t.path);
    REQUIRE(s);
    PullRecord done{"p1", "docker://r/a:1", "done", 10, int64_t{20}, "r/a:1", "sha256:aa", "", R"([{"done":5,"total":5}])"};
    REQUIRE((*s)->put_pull(done, 2));
    REQUIRE((*s)->put_pull({"p2", "docker://r/b:1", "running", 30}, 2));
    REQUIRE((*s)->put_pull({"p3", "docker://r/c:1", "queued", 40}, 2));
  }
  auto s = State::open(t.path);
  REQUIRE(s);
  auto recovery = (*s)->recover(50);
  REQUIRE(recovery);
  CHECK(recovery->pulls_interrupted == 2);
  auto p2 = (*s)->get_pull("p2");
  REQUIRE(p2);
  REQUIRE(p2->has_value());
  CHECK((*p2)->state == "failed");
  CHECK((*p2)->finished_ms == 50);
  CHECK((*p2)->error.starts_with("interrupted: the daemon stopped while this pull ran"));
  CHECK((*p2)->error.find("docker://r/b:1 again fetches only the rest") != std::string::npos);
  CHECK((**(*s)->get_pull("p3")).error.find("waited to start") != std::string::npos);
  CHECK((**(*s)->get_pull("p1")).digest == "sha256:aa");
  // Only the newest `keep` finished pulls stay.
  REQUIRE((*s)->put_pull({"p4", "docker://r/d:1", "done", 60, int64_t{70}}, 2));
  CHECK(!(*s)->get_pull("p1")->has_value());
  CHECK(!(*s)->get_pull("p2")->has_value());
  CHECK((*s)->get_pull("p3")->has_value());
  CHECK(!(*s)->get_pull("nope")->has_value());
}

TEST_CASE("state: an upgrade keeps who stored functions run as: schema 4's stay host root, explicitly") {
  // Schema 4: no function had a user namespace.
  TempDb v4;
  REQUIRE(test::write_state_db_v4(v4.path, {"old-a", "old-b"}, "hello:latest") == "");
  // Schema 5 held functions stored before it (no "userns" field) that ran in their own namespace
  // since (an id range recorded) and others that had not run yet.
  TempDb v5;
  REQUIRE(test::write_state_db_v4(v5.path, {"ran-in-userns", "never-ran"}, "hello:latest") == "");
  REQUIRE(test::upgrade_state_db_v4_to_v5(v5.path, {"ran-in-userns"}) == "");

  struct Expect {
    const TempDb& db;
    std::string function;
    bool userns;
  };
  for (const auto& e : std::vector<Expect>{{v4, "old-a", false}, {v4, "old-b", false},
                                           {v5, "ran-in-userns", true}, {v5, "never-ran", false}}) {
    CAPTURE(e.function);
    auto s = std::move(*State::open(e.db.path));
    CHECK(*s->schema_version() == kSchemaVersion);
    auto f = s->get_function(e.function).value();
    REQUIRE(f);
    // Written into the spec, so GET shows it and this daemon's default_userns never flips it.
    CHECK(f->spec_json.find(e.userns ? R"("userns":true)" : R"("userns":false)") != std::string::npos);
    auto spec = parse_function_spec(e.function, f->spec_json);
    REQUIRE(spec);
    CHECK(spec->userns == e.userns);
    FunctionDefaults opposite;
    opposite.userns = !e.userns;
    CHECK(parse_function_spec(e.function, f->spec_json, opposite)->userns == e.userns);
  }
  // A function stored after the upgrade takes the default again.
  auto s = std::move(*State::open(v4.path));
  REQUIRE(*s->put_function("new", R"({"image":"hello:latest","cmd":["true"]})", 3));
  CHECK(parse_function_spec("new", s->get_function("new").value()->spec_json)->userns);
}

TEST_CASE("state: per-function id ranges are disjoint, kept across reopen, released, and skip busy ones") {
  TempDb t;
  const sandbox::IdRange pool{1000000, 4 * 65536};
  auto none = [](uid_t) { return false; };
  uid_t a_first = 0;
  {
    auto s = std::move(*State::open(t.path));
    auto a = s->id_range_for("a", pool, 65536, none);
    auto b = s->id_range_for("b", pool, 65536, none);
    REQUIRE(a);
    REQUIRE(b);
    CHECK(a->host_first == 1000000);
    CHECK(b->host_first == 1000000 + 65536);
    CHECK(b->count == 65536);
    a_first = a->host_first;
  }
  auto s = std::move(*State::open(t.path));
  CHECK(s->id_range_for("a", pool, 65536, none)->host_first == a_first);  // recorded, not recomputed
  REQUIRE(s->release_id_range("a"));
  CHECK(!s->recorded_id_range("a")->has_value());
  // a's slot is free again, but a sandbox still runs in it: c gets the next free one.
  auto c = s->id_range_for("c", pool, 65536, [&](uid_t first) { return first == a_first; });
  CHECK(c->host_first == 1000000 + 2 * 65536);
  CHECK(s->id_range_for("d", pool, 65536, none)->host_first == a_first);
  CHECK(s->id_range_for("e", pool, 65536, none)->host_first == 1000000 + 3 * 65536);
  auto full = s->id_range_for("f", pool, 65536, none);
  REQUIRE(!full);
  CHECK(full.error().message().find("all 4 ranges of 65536 ids") != std::string::npos);
}

TEST_CASE("isolation: subordinate ids name the file and line to add; volumes only below volume_allow") {
  fs::TempDir dir = *fs::TempDir::make("/tmp", "fnexec-unit-isolation");
  IsolationSettings iso;
  iso.subuid_file = dir.path() / "subuid";
  iso.subgid_file = dir.path() / "subgid";
  auto missing = subordinate_ids(iso);
  REQUIRE(!missing);
  CHECK(missing.error().message().find((dir.path() / "subuid").string() + ": the file does not exist; add a line such as `fnexec:") != std::string::npos);
  REQUIRE(fs::write_file_atomic(iso.subuid_file, "other:1:2\nfnexec:200000:131072\n"));
  REQUIRE(fs::write_file_atomic(iso.subgid_file, "other:1:2\n"));
  auto no_line = subordinate_ids(iso);
  REQUIRE(!no_line);
  CHECK(no_line.error().message().find("no line for fnexec") != std::string::npos);
  REQUIRE(fs::write_file_atomic(iso.subgid_file, "fnexec:200000:131072\n"));
  CHECK(subordinate_ids(iso)->host_first == 200000);

  std::filesystem::create_directories(dir.path() / "ro" / "sub");
  std::filesystem::create_directories(dir.path() / "rw");
  std::filesystem::create_symlink("/etc", dir.path() / "ro" / "out");
  std::vector<VolumeAllow> allow = {*parse_volume_allow((dir.path() / "ro").string()),
                                    *parse_volume_allow((dir.path() / "rw").string() + ":rw")};
  std::vector<sandbox::Volume> ok = {{dir.path() / "ro" / "sub", "/data", true}, {dir.path() / "rw", "/out", false}};
  CHECK(check_volumes("f", ok, allow));
  for (auto [source, read_only, message] : std::vector<std::tuple<std::filesystem::path, bool, std::string>>{
           {"/etc", true, "/etc is not below a volume_allow path"},
           {dir.path() / "ro" / "out", true, "/etc is not below a volume_allow path"},  // the symlink's target counts
           {dir.path() / "ro", false, "is read-only; add :rw there"},
           {dir.path() / "nope", true, "No such file"},
       }) {
    std::vector<sandbox::Volume> v = {{source, "/x", read_only}};
    auto r = check_volumes("f", v, allow);
    INFO(source.string());
    REQUIRE(!r);
    CHECK(r.error().message().find(message) != std::string::npos);
  }
  std::vector<sandbox::Volume> v = {{dir.path() / "rw", "/x", true}};
  auto none = check_volumes("f", v, {});
  REQUIRE(!none);
  CHECK(none.error().message().find("add `volume_allow = PATH` to fnexec.conf") != std::string::npos);
}

TEST_CASE("isolation: devices only when device_allow lists their number, with at most its access") {
  ServeConfig c;
  REQUIRE(apply_settings(c, {{"device_allow", "/dev/null:r", "t:1"}, {"device_allow", "/dev/zero", "t:2"}}));
  REQUIRE(c.isolation.device_allow.size() == 2);
  CHECK(c.isolation.device_allow[0].access == "r");
  CHECK(c.isolation.device_allow[1].access == "rwm");
  CHECK(!is_restart_only("device_allow"));
  for (auto [value, says] : std::vector<std::pair<const char*, const char*>>{
           {"/etc/passwd", "not a character or block device node"},
           {"/dev/no-such-node", "No such file or directory"},
           {"dev/null", "expected an absolute device path"},
           {"/dev/null:rx", "expected an absolute device path"}}) {
    auto r = apply_settings(c, {{"device_allow", value, "t:9"}});
    INFO(value);
    REQUIRE(!r);
    CHECK(r.error().message().find(says) != std::string::npos);
  }
  auto node = [](const char* text) { return *sandbox::parse_device(text, "devices"); };
  // By number: /dev/./null is /dev/null; 'm' always comes with a device, so it is not compared.
  std::vector<sandbox::DeviceNode> ok = {node("/dev/./null:/dev/null:rm"), node("/dev/zero:/dev/z")};
  REQUIRE(check_devices("f", ok, c.isolation.device_allow));
  CHECK(ok[0].rdev == makedev(1, 3));
  CHECK(S_ISCHR(ok[1].mode));
  std::vector<sandbox::DeviceNode> write = {node("/dev/null:w")};
  auto w = check_devices("f", write, c.isolation.device_allow);
  REQUIRE(!w);
  CHECK(w.error().message().find("it asks for w but device_allow = /dev/null:r allows r") != std::string::npos);
  std::vector<sandbox::DeviceNode> other = {node("/dev/full")};
  auto o = check_devices("f", other, c.isolation.device_allow);
  REQUIRE(!o);
  CHECK(o.error().message().find("/dev/full (c 1:7) is not a device_allow device") != std::string::npos);
  CHECK(!sandbox::parse_device("/dev/null:/tmp/null", "devices"));
  CHECK(!sandbox::parse_device("/dev/null:/dev/n:rwx", "devices"));
}

TEST_CASE("state: functions, records, recovery, retention") {
  TempDb t;
  auto s = std::move(*State::open(t.path));
  CHECK(*s->put_function("b", R"({"v":1})", 10) == true);
  CHECK(*s->put_function("a", R"({"v":2})", 11) == true);
  CHECK(*s->put_function("b", R"({"v":3})", 12) == false);
  auto b = s->get_function("b").value();
  REQUIRE(b);
  CHECK(b->spec_json == R"({"v":3})");
  CHECK(b->created_ms == 10);
  CHECK(b->updated_ms == 12);
  auto all = s->list_functions().value();
  REQUIRE(all.size() == 2);
  CHECK(all[0].name == "a");
  CHECK(*s->delete_function("a") == true);
  CHECK(*s->delete_function("a") == false);
  CHECK(!s->get_function("a").value());

  Retention keep;
  REQUIRE(s->insert_running("i1", "b", 100));
  auto r1 = s->get_invocation("i1").value();
  REQUIRE(r1);
  CHECK(r1->status == "running");
  CHECK(*r1->started_ms == 100);
  InvocationEnd e;
  e.id = "i1";
  e.start = "warm";
  e.outcome = "success";
  e.finished_ms = 105;
  e.wall_us = 4321;
  e.billed_ms = billed_ms(4321);
  e.exit_code = 0;
  e.cpu_user_us = 10;
  REQUIRE(s->finish(e, keep));
  r1 = s->get_invocation("i1").value();
  CHECK(r1->status == "done");
  CHECK(r1->start == "warm");
  CHECK(*r1->billed_ms == 5);
  CHECK(*r1->cpu_user_us == 10);
  CHECK(!r1->cpu_system_us);
  CHECK(!r1->output);

  REQUIRE(s->enqueue("q1", "b", "event-1", 200));
  REQUIRE(s->enqueue("q2", "b", "event-2", 201));
  REQUIRE(s->insert_running("i2", "b", 202));
  CHECK(*s->start_queued("q1", 203) == "event-1");
  CHECK(s->start_queued("q1", 203).error().kind == ErrorKind::not_found);  // not queued twice

  // A restart: the running sync row i2 becomes lost; the async q1 is handed back (its retry policy
  // decides, Service::start); q2 stays queued.
  auto rec = s->recover(300).value();
  CHECK(rec.lost == 1);
  CHECK(rec.queued == 1);
  CHECK(s->get_invocation("i2").value()->status == "lost");
  REQUIRE(rec.interrupted.size() == 1);
  CHECK(rec.interrupted[0].id == "q1");
  CHECK(rec.interrupted[0].delivery == 1);
  CHECK(s->get_invocation("q1").value()->status == "running");
  InvocationEnd q1;
  q1.id = "q1";
  q1.outcome = "lost";
  REQUIRE(s->finish(q1, keep));
  CHECK(s->get_invocation("q1").value()->status == "lost");
  auto queued = s->queued().value();
  REQUIRE(queued.size() == 1);
  CHECK(queued[0].id == "q2");
  CHECK(*s->start_queued("q2", 301) == "event-2");
  InvocationEnd q2;
  q2.id = "q2";
  q2.outcome = "success";
  q2.output = std::string("out\0put", 7);
  REQUIRE(s->finish(q2, keep));
  CHECK(*s->get_invocation("q2").value()->output == std::string("out\0put", 7));

  auto listed = s->list_invocations("b", 0, 10).value();
  REQUIRE(listed.size() == 4);
  CHECK(listed[0].id == "i2");  // newest first
  CHECK(!listed[0].output);
  CHECK(s->list_invocations("b", 201, 10).value().size() == 2);
  CHECK(s->list_invocations("", 0, 1).value().size() == 1);
  CHECK(s->list_invocations("zzz", 0, 10).value().empty());

  CHECK(s->get_invocation("i1").value());
}

TEST_CASE("state: each function keeps its own newest records_per_function records") {
  TempDb t;
  auto s = std::move(*State::open(t.path));
  Retention five{1 << 20, 5};
  auto finish = [&](const std::string& function, const std::string& id) {
    REQUIRE(s->insert_running(id, function, 1));
    InvocationEnd x;
    x.id = id;
    x.outcome = "success";
    REQUIRE(s->finish(x, five));
  };
  // A busy function next to a quiet one: the busy one's records never push out the quiet one's.
  for (int i = 0; i < 3; ++i) finish("quiet", "q" + std::to_string(i));
  for (int i = 0; i < 600; ++i) finish("busy", "b" + std::to_string(i));
  auto quiet = s->list_invocations("quiet", 0, 1000).value();
  CHECK(quiet.size() == 3);
  auto busy = s->list_invocations("busy", 0, 1000).value();
  REQUIRE(busy.size() == 5);
  CHECK(busy.front().id == "b599");
  CHECK(busy.back().id == "b595");
  // Interleaved, each keeps exactly its newest five, whichever records land on which sequence numbers.
  for (int i = 3; i < 40; ++i) {
    finish("quiet", "q" + std::to_string(i));
    finish("busy", "b" + std::to_string(600 + i));
  }
  quiet = s->list_invocations("quiet", 0, 1000).value();
  REQUIRE(quiet.size() == 5);
  CHECK(quiet.front().id == "q39");
  CHECK(quiet.back().id == "q35");
  CHECK(s->list_invocations("busy", 0, 1000).value().size() == 5);
  // A record still queued or running is never pruned, and does not count.
  REQUIRE(s->insert_running("q-running", "quiet", 2));
  for (int i = 40; i < 50; ++i) finish("quiet", "q" + std::to_string(i));
  CHECK(s->get_invocation("q-running").value()->status == "running");
  CHECK(s->list_invocations("quiet", 0, 1000).value().size() == 6);
  // Records a restart marks lost count as finished ones.
  REQUIRE(s->recover(3));
  finish("quiet", "q50");
  CHECK(s->list_invocations("quiet", 0, 1000).value().size() == 5);
  CHECK(!s->get_invocation("q-running").value());

  // A large limit is kept in batches of 1/64 of it: never fewer than the limit, never more than a batch over.
  Retention many{1 << 20, 640};
  for (int i = 0; i < 2000; ++i) {
    REQUIRE(s->insert_running("m" + std::to_string(i), "many", 1));
    InvocationEnd x;
    x.id = "m" + std::to_string(i);
    x.outcome = "success";
    REQUIRE(s->finish(x, many));
    if (i >= 640) {
      auto n = s->list_invocations("many", 0, 10000).value().size();
      REQUIRE_MESSAGE((n >= 640 && n < 650), n << " records after " << i + 1);
    }
  }
  CHECK(s->get_invocation("m1999").value());
  CHECK(s->list_invocations("quiet", 0, 1000).value().size() == 5);
}

TEST_CASE("state: logs bounded per function, oldest dropped first") {
  TempDb t;
  auto s = std::move(*State::open(t.path));
  Retention small{100, 1000};
  for (int i = 0; i < 10; ++i)
    REQUIRE(s->append_log("f", "id" + std::to_string(i), 1000 + i, std::string(30, char('a' + i)), small));
  REQUIRE(s->append_log("g", "other", 5, "g's line", small));
  auto logs = s->logs("f", 0, 0, 100).value();
  REQUIRE(logs.size() == 3);  // 3 x 30 bytes fit in 100
  CHECK(logs[0].invocation_id == "id7");
  CHECK(logs[2].invocation_id == "id9");
  CHECK(logs[2].text == std::string(30, 'j'));
  CHECK(s->logs("f", 1009, 0, 100).value().size() == 1);
  CHECK(s->logs("f", 0, logs[1].seq, 100).value().size() == 1);
  auto newest = s->logs("f", 0, 0, 2).value();
  REQUIRE(newest.size() == 2);
  CHECK(newest[0].invocation_id == "id8");
  CHECK(*s->log_of("id9").value() == std::string(30, 'j'));
  CHECK(!s->log_of("id0").value());
  CHECK(s->logs("g", 0, 0, 10).value().size() == 1);
  // An entry larger than the whole budget still keeps the newest one.
  REQUIRE(s->append_log("f", "huge", 2000, std::string(500, 'z'), small));
  auto after = s->logs("f", 0, 0, 100).value();
  REQUIRE(after.size() == 1);
  CHECK(after[0].invocation_id == "huge");
}
