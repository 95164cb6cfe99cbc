// Lambda's Invoke API on the daemon, driven by clients fnexec did not write: curl on the unix
// socket, the AWS SDK for JavaScript v3 (pinned in tests/lambda/package.json) and the AWS CLI over
// TCP with SigV4, and the SDK over the TLS listener.
#include <fmt/format.h>
#include <simdjson.h>

#include "server/json.h"
#include "lambda_images.h"
#include "test_pki.h"
#include "test_serve_fixture.h"

using namespace fnexec;
using namespace fnexec::test::serve;

namespace {

constexpr const char* kKeyId = "AKIDFNEXECLAMBDA";
constexpr const char* kSecret = "lambda-invoke-test-secret-0123456789";
constexpr const char* kRegion = "eu-west-3";
constexpr const char* kAccount = "123456789012";

std::string lambda_config(uint16_t port) {
  return fmt::format("listen = 127.0.0.1:{}\naccess_key = {} {}\nlambda_region = {}\nlambda_account_id = {}\n"
                     "max_event_bytes = 64k\n",
                     port, kKeyId, kSecret, kRegion, kAccount);
}

std::string tls_config() {
  return fmt::format("tls_cert = {}\ntls_key = {}\n", pki().cert.string(), pki().key.string());
}

// A daemon listening on TCP (with tls: TLS with the test PKI's certificate) with an access key,
// and a busybox image for the functions.
struct LambdaDaemon : InvokeDaemon {
  explicit LambdaDaemon(uint16_t port = free_tcp_port(), bool tls = false)
      : InvokeDaemon(lambda_config(port) + (tls ? tls_config() : "")), port(port), tls(tls) {}
  std::string endpoint() const { return fmt::format("{}://127.0.0.1:{}", tls ? "https" : "http", port); }
  Http invoke_lambda(const std::string& name, const std::string& body, std::vector<std::string> headers = {}) {
    std::vector<std::string> extra;
    for (auto& h : headers) extra.insert(extra.end(), {"-H", h});
    return curl("POST", "/2015-03-31/functions/" + name + "/invocations", body, extra);
  }
  // Invocations of a function in its records: the side effect that counts runs.
  size_t runs(const std::string& name) {
    auto r = curl("GET", "/v1/invocations?function=" + name + "&limit=1000");
    size_t n = 0;
    for (size_t at = 0; (at = r.body.find("\"id\":", at)) != std::string::npos; ++at) ++n;
    return n;
  }
  uint16_t port;
  bool tls;
};

stdfs::path sdk_dir() {
  static const stdfs::path dir = [] {
    stdfs::path dest = stdfs::path(std::getenv("FNEXEC_BUILD_ROOT")) / "tests" / "lambda-sdk";
    auto script = stdfs::path(std::getenv("FNEXEC_SOURCE_ROOT")) / "tests" / "lambda" / "install-sdk.sh";
    auto r = test::run({script.string(), dest.string()});
    REQUIRE_MESSAGE(r.exit_code == 0, "npm install of @aws-sdk/client-lambda failed: " << r.err);
    return dest;
  }();
  return dir;
}

// One SDK call; the parsed JSON line it printed.
struct SdkResult {
  std::string raw;
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  std::string str(const char* key) {
    std::string_view v;
    return doc[key].get(v) ? std::string() : std::string(v);
  }
  int64_t num(const char* key) {
    int64_t v = -1;
    return doc[key].get(v) ? -1 : v;
  }
  bool ok() {
    bool v = false;
    return !doc["ok"].get(v) && v;
  }
};

// Over TLS the SDK (Node's https) trusts the test CA through NODE_EXTRA_CA_CERTS unless trust_ca is false.
std::unique_ptr<SdkResult> sdk(const LambdaDaemon& d, const std::string& op, const std::string& input_json,
                               const std::string& more = "", const std::string& secret = kSecret,
                               const std::string& key_id = kKeyId, bool trust_ca = true) {
  std::string request = fmt::format(
      R"({{"endpoint":{},"accessKeyId":{},"secretAccessKey":{},"region":{},"op":{},"input":{}{}}})",
      server::json_string(d.endpoint()), server::json_string(key_id), server::json_string(secret),
      server::json_string(kRegion), server::json_string(op), input_json, more.empty() ? "" : "," + more);
  test::ProcOptions o;
  if (d.tls && trust_ca) o.env["NODE_EXTRA_CA_CERTS"] = pki().ca.string();
  auto r = test::run({"node", (sdk_dir() / "sdk-client.mjs").string(), request}, o);
  INFO("sdk " << op << " " << input_json << ": " << r.err);
  REQUIRE(r.exit_code == 0);
  auto out = std::make_unique<SdkResult>();
  out->raw = r.out;
  REQUIRE_MESSAGE(!out->parser.parse(out->raw).get(out->doc), "not JSON: " << r.out);
  return out;
}

// The output an Event invocation (its x-amzn-RequestId) left in its record, once it is done.
std::string event_output(const LambdaDaemon& d, std::string request_id) {
  std::erase(request_id, '-');
  std::string record;
  wait_until([&] {
    record = d.curl("GET", "/v1/invocations/" + request_id).body;
    return contains(record, R"("status":"done")");
  }, "the Event invocation to run");
  simdjson::dom::parser parser;
  std::string_view output;
  REQUIRE_MESSAGE(!parser.parse(record).get_object()["output"].get(output), record);
  return std::string(output);
}

std::string b64decode(const std::string& s) {
  auto d = server::base64_decode(s);
  REQUIRE(d);
  return *d;
}

}  // namespace

TEST_SUITE("serve-lambda") {
  TEST_CASE("Invoke over the unix socket: RequestResponse, Event, DryRun, Tail, function errors, retries") {
    LambdaDaemon d;
    d.create("echo", "cat; echo log-line-from-echo >&2", R"("min_warm":0,"memory_mb":64)");

    auto r = d.invoke_lambda("echo", R"({"hello":"lambda"})");
    CHECK(r.status == 200);
    CHECK(r.body == R"({"hello":"lambda"})");
    CHECK(r.header("X-Amz-Executed-Version") == "$LATEST");
    auto request_id = r.header("x-amzn-RequestId");
    REQUIRE(request_id.size() == 36);
    CHECK(r.header("X-Amz-Function-Error").empty());
    CHECK(r.header("X-Amz-Log-Result").empty());
    // The request id is the record's id as a UUID.
    std::string hex = request_id;
    std::erase(hex, '-');
    CHECK(d.curl("GET", "/v1/invocations/" + hex).status == 200);

    // An ARN (percent-encoded, as the SDK sends it) and the $LATEST qualifier name the same function.
    auto arn = fmt::format("arn%3Aaws%3Alambda%3A{}%3A{}%3Afunction%3Aecho", kRegion, kAccount);
    CHECK(d.invoke_lambda(arn, "{}").status == 200);
    CHECK(d.invoke_lambda(arn + "%3A%24LATEST", "{}").status == 200);
    CHECK(d.invoke_lambda(std::string(kAccount) + "%3Afunction%3Aecho", "{}").status == 200);
    CHECK(d.invoke_lambda("echo%3A%24LATEST", "[1,2]").body == "[1,2]");
    // No payload: the function gets {}, as a Lambda function does.
    CHECK(d.invoke_lambda("echo", "").body == "{}");

    auto tail = d.invoke_lambda("echo", "{}", {"X-Amz-Log-Type: Tail"});
    CHECK(tail.status == 200);
    auto log = b64decode(tail.header("X-Amz-Log-Result"));
    CHECK(contains(log, "START RequestId: " + tail.header("x-amzn-RequestId") + " Version: $LATEST"));
    CHECK(contains(log, "log-line-from-echo"));
    CHECK(contains(log, "END RequestId: "));
    CHECK(std::regex_search(log, std::regex(R"(REPORT RequestId: \S+\tDuration: \d+\.\d\d ms\tBilled Duration: \d+ ms\tMemory Size: 64 MB\t)")));

    size_t before = d.runs("echo");
    auto dry = d.invoke_lambda("echo", "{}", {"X-Amz-Invocation-Type: DryRun"});
    CHECK(dry.status == 204);
    CHECK(d.runs("echo") == before);

    auto ev = d.invoke_lambda("echo", R"({"async":true})", {"X-Amz-Invocation-Type: Event"});
    CHECK(ev.status == 202);
    CHECK(ev.body.empty());
    std::string ev_id = ev.header("x-amzn-RequestId");
    std::erase(ev_id, '-');
    wait_until([&] { return contains(d.curl("GET", "/v1/invocations/" + ev_id).body, R"("status":"done")"); },
               "the Event invocation to run");
    CHECK(contains(d.curl("GET", "/v1/invocations/" + ev_id).body, R"(async\":true)"));

    // A function that fails is 200 with X-Amz-Function-Error, never 5xx (the SDK would retry it).
    d.create("fails", "echo oops >&2; exit 3", R"("min_warm":0)");
    auto f = d.invoke_lambda("fails", "{}", {"X-Amz-Log-Type: Tail"});
    CHECK(f.status == 200);
    CHECK(f.header("X-Amz-Function-Error") == "Unhandled");
    CHECK(contains(f.body, R"("errorType":"Runtime.ExitError")"));
    CHECK(contains(f.body, "exited with code 3"));
    CHECK(contains(b64decode(f.header("X-Amz-Log-Result")), "oops"));
    d.create("slow", "sleep 30", R"("min_warm":0,"timeout_ms":300)");
    auto t = d.invoke_lambda("slow", "{}");
    CHECK(t.status == 200);
    CHECK(t.header("X-Amz-Function-Error") == "Unhandled");
    CHECK(contains(t.body, R"("errorType":"Sandbox.Timedout")"));
    CHECK(contains(t.body, "Task timed out after 0.30 seconds"));

    // The same amz-sdk-invocation-id runs the function once: the second request gets the first's reply.
    d.create("counted", "sleep 1; cat", R"("min_warm":0,"max_concurrency":4)");
    std::string id_header = "amz-sdk-invocation-id: 5b1e7a4c-0000-4000-8000-lambdainvoke";
    Http first, second;
    std::thread a([&] { first = d.invoke_lambda("counted", R"({"n":1})", {id_header}); });
    wait_until([&] { return d.runs("counted") == 1; }, "the first request to start");
    second = d.invoke_lambda("counted", R"({"n":1})", {id_header});
    a.join();
    CHECK(first.status == 200);
    CHECK(second.status == 200);
    CHECK(second.body == R"({"n":1})");
    CHECK(second.header("x-amzn-RequestId") == first.header("x-amzn-RequestId"));
    auto third = d.invoke_lambda("counted", R"({"n":1})", {id_header});
    CHECK(third.header("x-amzn-RequestId") == first.header("x-amzn-RequestId"));
    CHECK(d.runs("counted") == 1);
    CHECK(d.invoke_lambda("counted", R"({"n":2})").status == 200);  // no id: a new run
    CHECK(d.runs("counted") == 2);
  }

  TEST_CASE("Invoke: service errors in Lambda's form, hostile names and headers") {
    LambdaDaemon d;
    d.create("echo", "cat", R"("min_warm":0)");
    auto expect = [&](const Http& r, int status, const std::string& type) {
      INFO(r.status << " " << r.headers << r.body);
      CHECK(r.status == status);
      CHECK(r.header("x-amzn-ErrorType") == type);
      CHECK(contains(r.body, R"("message":")"));
      CHECK(contains(r.body, R"("Type":")"));
      CHECK(r.header("x-amzn-RequestId").size() == 36);
    };
    expect(d.invoke_lambda("nope", "{}"), 404, "ResourceNotFoundException");
    expect(d.invoke_lambda("ECHO", "{}"), 404, "ResourceNotFoundException");
    expect(d.invoke_lambda("echo%3Av1", "{}"), 404, "ResourceNotFoundException");
    auto qual = d.curl("POST", "/2015-03-31/functions/echo/invocations?Qualifier=prod", "{}");
    expect(qual, 404, "ResourceNotFoundException");
    CHECK(contains(qual.body, "versions and aliases are not supported"));
    expect(d.invoke_lambda("arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Aecho", "{}"), 404,
           "ResourceNotFoundException");
    expect(d.invoke_lambda("arn%3Aaws%3Alambda%3Aeu-west-3%3A12%3Afunction%3Aecho", "{}"), 400, "ValidationException");
    expect(d.invoke_lambda("arn%3Aaws%3As3%3Aeu-west-3%3A123456789012%3Afunction%3Aecho", "{}"), 400,
           "ValidationException");
    expect(d.invoke_lambda("echo%3Aa%3Ab", "{}"), 400, "ValidationException");
    expect(d.invoke_lambda("..%2F..%2Fetc%2Fpasswd", "{}"), 400, "ValidationException");
    expect(d.invoke_lambda("echo%00", "{}"), 400, "ValidationException");
    expect(d.curl("POST", "/2015-03-31/functions/../invocations", "{}", {"--path-as-is"}), 404,
           "ResourceNotFoundException");
    expect(d.invoke_lambda(std::string(300, 'a'), "{}"), 400, "ValidationException");
    auto huge = d.invoke_lambda(std::string(20000, 'a'), "{}");  // beyond the 16 KiB header limit
    CHECK(huge.status == 431);
    CHECK(contains(huge.body, "16 KiB"));
    expect(d.invoke_lambda("echo%zz", "{}"), 400, "InvalidRequestContentException");
    expect(d.invoke_lambda("echo", "not json"), 400, "InvalidRequestContentException");
    expect(d.invoke_lambda("echo", "{}", {"X-Amz-Invocation-Type: Sometimes"}), 400, "ValidationException");
    expect(d.invoke_lambda("echo", "{}", {"X-Amz-Log-Type: Everything"}), 400, "ValidationException");
    expect(d.invoke_lambda("echo", "{}", {"X-Amz-Client-Context: %%%"}), 400, "InvalidRequestContentException");
    expect(d.invoke_lambda("echo", "[" + std::string(100000, ' ') + "]"), 413, "RequestTooLargeException");
    expect(d.curl("GET", "/2015-03-31/functions/echo/invocations"), 405, "MethodNotAllowedException");
    expect(d.curl("GET", "/2015-03-31/layers"), 404, "UnknownOperationException");
    // Nothing above ran the function; the daemon still serves.
    CHECK(d.runs("echo") == 0);
    CHECK(d.invoke_lambda("echo", R"("still here")").body == R"("still here")");
  }

  TEST_CASE("the AWS SDK for JavaScript v3 over TCP with SigV4") {
    LambdaDaemon d;
    d.create("echo", "cat; echo sdk-log >&2", R"("min_warm":1,"memory_mb":64,"timeout_ms":5000)");
    d.create("fails", R"(echo '{"errorMessage":"bad input","errorType":"ValueError"}' >&2; exit 1)",
             R"("min_warm":0)");

    auto r = sdk(d, "invoke", R"({"FunctionName":"echo","Payload":"{\"from\":\"sdk\"}"})");
    INFO(r->raw);
    CHECK(r->ok());
    CHECK(r->num("StatusCode") == 200);
    CHECK(r->str("Payload") == R"({"from":"sdk"})");
    CHECK(r->str("ExecutedVersion") == "$LATEST");
    CHECK(r->str("requestId").size() == 36);

    auto tail = sdk(d, "invoke", R"({"FunctionName":"echo","Payload":"{}","LogType":"Tail"})");
    CHECK(contains(tail->str("Log"), "sdk-log"));
    CHECK(contains(tail->str("Log"), "REPORT RequestId: " + tail->str("requestId")));

    auto arn = sdk(d, "invoke", fmt::format(R"({{"FunctionName":"arn:aws:lambda:{}:{}:function:echo:$LATEST","Payload":"1"}})",
                                            kRegion, kAccount));
    CHECK(arn->str("Payload") == "1");

    auto ev = sdk(d, "invoke", R"({"FunctionName":"echo","Payload":"{}","InvocationType":"Event"})");
    INFO(ev->raw);
    CHECK(ev->ok());
    CHECK(ev->num("StatusCode") == 202);
    auto dry = sdk(d, "invoke", R"({"FunctionName":"echo","InvocationType":"DryRun"})");
    INFO(dry->raw);
    CHECK(dry->ok());
    CHECK(dry->num("StatusCode") == 204);

    auto fe = sdk(d, "invoke", R"({"FunctionName":"fails","Payload":"{}"})");
    INFO(fe->raw);
    CHECK(fe->ok());
    CHECK(fe->num("StatusCode") == 200);
    CHECK(fe->str("FunctionError") == "Unhandled");
    CHECK(contains(fe->str("Payload"), "Runtime.ExitError"));
    CHECK(fe->num("attempts") == 1);

    auto nf = sdk(d, "invoke", R"({"FunctionName":"missing","Payload":"{}"})");
    CHECK(!nf->ok());
    CHECK(nf->str("name") == "ResourceNotFoundException");
    CHECK(nf->num("status") == 404);

    auto big = sdk(d, "invoke", fmt::format(R"({{"FunctionName":"echo","Payload":"\"{}\""}})", std::string(70000, 'x')));
    CHECK(!big->ok());
    CHECK(big->str("name") == "RequestTooLargeException");

    auto list = sdk(d, "list", "{}");
    INFO(list->raw);
    CHECK(list->ok());
    CHECK(contains(list->raw, R"("FunctionName":"echo")"));
    CHECK(contains(list->raw, fmt::format(R"("FunctionArn":"arn:aws:lambda:{}:{}:function:fails")", kRegion, kAccount)));
    CHECK(contains(list->raw, R"("PackageType":"Image")"));
    CHECK(contains(list->raw, R"("State":"Active")"));
    auto page = sdk(d, "list", R"({"MaxItems":1})");
    CHECK(contains(page->raw, R"("NextMarker":"echo")"));
    auto page2 = sdk(d, "list", R"({"MaxItems":1,"Marker":"echo"})");
    CHECK(contains(page2->raw, R"("FunctionName":"fails")"));
    CHECK(!contains(page2->raw, "NextMarker"));

    auto get = sdk(d, "get", R"({"FunctionName":"echo"})");
    INFO(get->raw);
    CHECK(get->ok());
    CHECK(contains(get->raw, R"("MemorySize":64)"));
    CHECK(contains(get->raw, R"("Timeout":5)"));
    CHECK(contains(get->raw, R"("Version":"$LATEST")"));
    CHECK(contains(get->raw, R"("ImageUri":"bb:1")"));
    // The pinned image: CodeSha256 is base64 of its manifest digest's bytes (the form Lambda gives
    // a .zip's SHA-256 in), CodeSize its size as /v1/images shows it, ResolvedImageUri name@digest.
    std::smatch image;
    auto images = d.curl("GET", "/v1/images").body;
    REQUIRE_MESSAGE(std::regex_search(images, image, std::regex(R"re("name":"bb","tag":"1","digest":"sha256:([0-9a-f]{64})","size":(\d+))re")),
                    images);
    std::string digest_bytes;
    for (size_t i = 0; i < 64; i += 2) digest_bytes += static_cast<char>(std::stoi(image[1].str().substr(i, 2), nullptr, 16));
    CHECK(contains(get->raw, R"("CodeSha256":")" + server::base64_encode(digest_bytes) + "\""));
    CHECK(contains(get->raw, R"("CodeSize":)" + image[2].str() + ","));
    CHECK(contains(get->raw, R"("ResolvedImageUri":"bb@sha256:)" + image[1].str() + "\""));
    CHECK(contains(list->raw, R"("CodeSha256":")" + server::base64_encode(digest_bytes) + "\""));
    auto cfg = sdk(d, "config", R"({"FunctionName":"echo"})");
    CHECK(contains(cfg->raw, R"("FunctionName":"echo")"));
    CHECK(contains(cfg->raw, R"("CodeSha256":")" + server::base64_encode(digest_bytes) + "\""));
    auto get_missing = sdk(d, "get", R"({"FunctionName":"missing"})");
    CHECK(get_missing->str("name") == "ResourceNotFoundException");

    // Wrong secret, unknown key: 403 with the types the SDK names; nothing ran.
    size_t runs = d.runs("echo");
    auto bad_sig = sdk(d, "invoke", R"({"FunctionName":"echo","Payload":"{}"})", "", "wrong-secret-wrong-secret-1234");
    CHECK(bad_sig->str("name") == "InvalidSignatureException");
    CHECK(bad_sig->num("status") == 403);
    auto bad_key = sdk(d, "invoke", R"({"FunctionName":"echo","Payload":"{}"})", "", kSecret, "AKIDUNKNOWN");
    CHECK(bad_key->str("name") == "UnrecognizedClientException");
    CHECK(d.runs("echo") == runs);
    // Without credentials at all, and with a bearer token nobody configured.
    auto unsigned_req = d.curl("POST", "/2015-03-31/functions/echo/invocations", "{}",
                               {"--tcp", d.endpoint() + "/2015-03-31/functions/echo/invocations"});
    CHECK(unsigned_req.status == 403);
    CHECK(unsigned_req.header("x-amzn-ErrorType") == "MissingAuthenticationTokenException");
    auto bearer = d.curl("POST", "/2015-03-31/functions/echo/invocations", "{}",
                         {"--tcp", d.endpoint() + "/2015-03-31/functions/echo/invocations", "-H",
                          "Authorization: Bearer "});
    CHECK(bearer.status == 403);
  }

  TEST_CASE("the AWS SDK's ClientContext, a caller's trace id and Cognito identity reach a Lambda runtime") {
    if (python_missing()) return;
    LambdaDaemon d;
    auto up = d.curl("POST", "/v1/images?name=lpy%3A1", std::nullopt,
                     {"--data-binary", "@" + python_lambda_archive().string()});
    REQUIRE_MESSAGE(up.status == 201, up.body);
    auto put = d.curl("PUT", "/v1/functions/ctx", R"({"image":"lpy:1","protocol":"lambda","min_warm":1})");
    REQUIRE_MESSAGE(put.status == 201, put.body);

    // The SDK sends ClientContext base64 as X-Amz-Client-Context; the runtime gets it decoded, on
    // one line (the pretty-printed newlines would end the header).
    std::string client_context = "{\n  \"client\": {\"app_title\": \"fnexec-test\"},\n  \"custom\": {\"k\": \"v\"}\n}";
    auto r = sdk(d, "invoke",
                 fmt::format(R"({{"FunctionName":"ctx","Payload":"{{\"action\":\"context\"}}","ClientContext":{}}})",
                             server::json_string(server::base64_encode(client_context))));
    INFO(r->raw);
    REQUIRE(r->ok());
    CHECK(r->str("FunctionError").empty());
    auto payload = r->str("Payload");
    CHECK(contains(payload, R"("client_context": {"client": {"app_title": "fnexec-test"}, "custom": {"k": "v"}})"));
    CHECK(contains(payload, R"("identity": null)"));
    // No trace id from the caller: one is made in X-Ray's form.
    CHECK(std::regex_search(payload, std::regex(R"("trace_id": "Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0")")));

    // An Event invocation keeps its context in the queue (SQLite here) until it runs: the SDK's
    // ClientContext and a caller's trace id reach the runtime as for RequestResponse.
    auto ev = sdk(d, "invoke",
                  fmt::format(R"({{"FunctionName":"ctx","InvocationType":"Event","Payload":"{{\"action\":\"context\"}}",)"
                              R"("ClientContext":{}}})",
                              server::json_string(server::base64_encode(client_context))));
    INFO(ev->raw);
    REQUIRE(ev->ok());
    CHECK(ev->num("StatusCode") == 202);
    auto async_output = event_output(d, ev->str("requestId"));
    CHECK(contains(async_output, R"("client_context": {"client": {"app_title": "fnexec-test"}, "custom": {"k": "v"}})"));
    auto traced = d.invoke_lambda(
        "ctx", R"({"action":"context"})",
        {"X-Amz-Invocation-Type: Event", "X-Amzn-Trace-Id: Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
         R"(Fnexec-Cognito-Identity: {"cognitoIdentityId":"eu-west-3:ev","cognitoIdentityPoolId":"eu-west-3:pool"})"});
    REQUIRE(traced.status == 202);
    auto traced_output = event_output(d, traced.header("x-amzn-RequestId"));
    CHECK(contains(traced_output, R"("trace_id": "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1")"));
    CHECK(contains(traced_output, R"("identity": {"cognitoIdentityId": "eu-west-3:ev", "cognitoIdentityPoolId": "eu-west-3:pool"})"));
    CHECK(contains(traced_output, R"("client_context": null)"));

    // A caller's own trace id and a Cognito identity (from a gateway that authenticated one) pass through.
    auto given = d.invoke_lambda(
        "ctx", R"({"action":"context"})",
        {"X-Amzn-Trace-Id: Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
         R"(Fnexec-Cognito-Identity: {"cognitoIdentityId":"eu-west-3:abc","cognitoIdentityPoolId":"eu-west-3:pool"})"});
    INFO(given.body);
    CHECK(given.status == 200);
    CHECK(contains(given.body, R"("trace_id": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1")"));
    CHECK(contains(given.body, R"("identity": {"cognitoIdentityId": "eu-west-3:abc", "cognitoIdentityPoolId": "eu-west-3:pool"})"));
    CHECK(contains(given.body, R"("client_context": null)"));

    // Bad client contexts are the caller's mistake, named, and nothing runs: not base64, not a JSON
    // object, over Lambda's 3583 characters.
    size_t runs = d.runs("ctx");
    for (const auto& bad : {std::string("%%%"), server::base64_encode("not json"), server::base64_encode("[1,2]"),
                            server::base64_encode(R"({"custom":")" + std::string(2800, 'x') + R"("})")}) {
      auto sdk_bad = sdk(d, "invoke", fmt::format(R"({{"FunctionName":"ctx","Payload":"{{}}","ClientContext":{}}})",
                                                  server::json_string(bad)));
      INFO(sdk_bad->raw);
      CHECK(!sdk_bad->ok());
      CHECK(sdk_bad->num("status") == 400);
      CHECK(sdk_bad->str("name") == "InvalidRequestContentException");
      CHECK(contains(sdk_bad->str("message"), "X-Amz-Client-Context must be a base64 JSON object of at most 3583"));
    }
    auto bad_trace = d.invoke_lambda("ctx", "{}", {"X-Amzn-Trace-Id: Root=1 has spaces"});
    CHECK(bad_trace.status == 400);
    CHECK(contains(bad_trace.body, "X-Amzn-Trace-Id must be"));
    auto bad_identity = d.invoke_lambda("ctx", "{}", {"Fnexec-Cognito-Identity: eu-west-3:abc"});
    CHECK(bad_identity.status == 400);
    CHECK(contains(bad_identity.body, "Fnexec-Cognito-Identity must be a JSON object"));
    CHECK(d.runs("ctx") == runs);
  }

  TEST_CASE("the AWS SDK for JavaScript v3 over the TLS listener (NODE_EXTRA_CA_CERTS): SigV4 accepted, a wrong key refused") {
    LambdaDaemon d(free_tcp_port(), true);
    CHECK(contains(d.log(), "tls=on"));
    d.create("echo", "cat", R"("min_warm":0,"memory_mb":64)");
    auto r = sdk(d, "invoke", R"({"FunctionName":"echo","Payload":"{\"over\":\"tls\"}"})");
    CHECK(r->ok());
    CHECK(r->num("StatusCode") == 200);
    CHECK(r->str("Payload") == R"({"over":"tls"})");
    auto list = sdk(d, "list", "{}");
    CHECK(list->ok());
    CHECK(contains(list->raw, R"("FunctionName":"echo")"));

    size_t runs = d.runs("echo");
    auto bad_sig = sdk(d, "invoke", R"({"FunctionName":"echo","Payload":"{}"})", "", "wrong-secret-wrong-secret-1234");
    CHECK(!bad_sig->ok());
    CHECK(bad_sig->str("name") == "InvalidSignatureException");
    CHECK(bad_sig->num("status") == 403);
    auto bad_key = sdk(d, "invoke", R"({"FunctionName":"echo","Payload":"{}"})", "", kSecret, "AKIDUNKNOWN");
    CHECK(bad_key->str("name") == "UnrecognizedClientException");
    // Without the test CA, Node refuses the daemon's certificate before anything is sent.
    auto untrusted = sdk(d, "invoke", R"({"FunctionName":"echo","Payload":"{}"})", R"("maxAttempts":1)", kSecret,
                         kKeyId, false);
    CHECK(!untrusted->ok());
    CHECK_MESSAGE(contains(untrusted->str("message"), "certificate"), untrusted->raw);
    CHECK(d.runs("echo") == runs);
    // Plain http to the TLS port is refused too.
    auto plain = d.curl("POST", "/2015-03-31/functions/echo/invocations", "{}",
                        {"--tcp", fmt::format("http://127.0.0.1:{}/2015-03-31/functions/echo/invocations", d.port)});
    CHECK(plain.status == 400);
    CHECK(d.runs("echo") == runs);
  }

  TEST_CASE("the AWS SDK: throttling beyond max_concurrency, and retries that never run a function twice") {
    LambdaDaemon d;
    d.create("single", "sleep 2; cat", R"("min_warm":0,"max_concurrency":1)");
    std::unique_ptr<SdkResult> first;
    std::thread a([&] { first = sdk(d, "invoke", R"({"FunctionName":"single","Payload":"1"})"); });
    wait_until([&] { return d.runs("single") == 1; }, "the first invocation to start");
    auto throttled = sdk(d, "invoke", R"({"FunctionName":"single","Payload":"2"})", R"("maxAttempts":1)");
    CHECK(throttled->str("name") == "TooManyRequestsException");
    CHECK(throttled->num("status") == 429);
    // With retries the SDK gets through once the slot is free: the 429s ran nothing.
    auto retried = sdk(d, "invoke", R"({"FunctionName":"single","Payload":"3"})", R"("maxAttempts":12)");
    a.join();
    CHECK(first->ok());
    INFO(retried->raw);
    CHECK(retried->ok());
    CHECK(retried->str("Payload") == "3");
    CHECK(d.runs("single") == 2);

    // The SDK gives up waiting after 300 ms and retries with the same amz-sdk-invocation-id: the
    // retries wait for the first run (or get its stored reply), which is the only run.
    d.create("patient", "sleep 1; cat", R"("min_warm":0,"max_concurrency":4)");
    auto timed = sdk(d, "invoke", R"({"FunctionName":"patient","Payload":"\"once\""})",
                     R"("maxAttempts":20,"requestTimeoutMs":300)");
    INFO(timed->raw);
    CHECK(timed->ok());
    CHECK(timed->str("Payload") == R"("once")");
    CHECK(timed->num("attempts") > 1);
    CHECK(d.runs("patient") == 1);
  }

  TEST_CASE("the AWS CLI: aws lambda invoke and list-functions with SigV4") {
    if (!stdfs::exists("/usr/bin/aws")) {
      MESSAGE("skipped: Debian's awscli is not installed (scripts/install-deps.sh)");
      return;
    }
    LambdaDaemon d;
    d.create("echo", "cat", R"("min_warm":0)");
    test::ProcOptions o;
    auto home = d.scratch() / "aws-home";
    stdfs::create_directories(home);
    o.env = {{"AWS_ACCESS_KEY_ID", kKeyId},          {"AWS_SECRET_ACCESS_KEY", kSecret},
             {"AWS_DEFAULT_REGION", kRegion},        {"AWS_CONFIG_FILE", "/dev/null"},
             {"AWS_SHARED_CREDENTIALS_FILE", "/dev/null"}, {"AWS_EC2_METADATA_DISABLED", "true"},
             {"AWS_PAGER", ""},                      {"HOME", home.string()}};
    auto out = home / "out.json";
    auto inv = test::run({"/usr/bin/aws", "lambda", "invoke", "--endpoint-url", d.endpoint(), "--function-name", "echo",
                          "--cli-binary-format", "raw-in-base64-out", "--payload", R"({"cli":true})", "--log-type",
                          "Tail", out.string()},
                         o);
    INFO(inv.out << inv.err);
    CHECK(inv.exit_code == 0);
    CHECK(slurp(out) == R"({"cli":true})");
    CHECK(contains(inv.out, R"("StatusCode": 200)"));
    CHECK(contains(inv.out, R"("ExecutedVersion": "$LATEST")"));
    CHECK(contains(inv.out, R"("LogResult": ")"));

    auto list = test::run({"/usr/bin/aws", "lambda", "list-functions", "--endpoint-url", d.endpoint()}, o);
    INFO(list.err);
    CHECK(list.exit_code == 0);
    CHECK(contains(list.out, R"("FunctionName": "echo")"));

    auto missing = test::run({"/usr/bin/aws", "lambda", "get-function", "--endpoint-url", d.endpoint(),
                              "--function-name", "missing"},
                             o);
    CHECK(missing.exit_code != 0);
    CHECK(contains(missing.err, "ResourceNotFoundException"));

    o.env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret-not-the-secret";
    auto denied = test::run({"/usr/bin/aws", "lambda", "list-functions", "--endpoint-url", d.endpoint()}, o);
    CHECK(denied.exit_code != 0);
    CHECK(contains(denied.err, "InvalidSignatureException"));
  }

  TEST_CASE("fnexec.conf with an access_key must not be readable by others") {
    Daemon d(lambda_config(free_tcp_port()));
    // start_expecting_failure writes the config 0644, as a careless admin would.
    auto [status, log] = d.start_expecting_failure({});
    CHECK(status != 0);
    CHECK(contains(log, "holds access_key secrets"));
    CHECK(contains(log, "chmod 600"));
    CHECK(!contains(log, kSecret));
  }
}
