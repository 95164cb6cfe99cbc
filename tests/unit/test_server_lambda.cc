// The Lambda API's pieces without a socket: SigV4 against AWS's published vectors, FunctionName
// forms, the Tail log, the replay cache, the routes and config keys.
#include <doctest/doctest.h>

#include <chrono>

#include "server/api.h"
#include "server/config.h"
#include "server/lambda_api.h"
#include "server/sigv4.h"

using namespace fnexec;
using namespace fnexec::server;

namespace {

// The credentials and time of AWS's SigV4 test suite (aws-sig-v4-test-suite) and of the
// "derive a signing key" example in the SigV4 documentation.
constexpr const char* kSuiteSecret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
constexpr const char* kSuiteDate = "20150830T123600Z";
constexpr const char* kEmptySha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

std::string suite_signature(const std::string& method, const std::string& target,
                            std::vector<std::pair<std::string, std::string>> headers, const std::string& payload_hash,
                            const std::vector<std::string>& signed_headers) {
  sigv4::SignedRequest r{method, target, std::move(headers), payload_hash};
  auto canonical = sigv4::canonical_request(r, signed_headers);
  REQUIRE(canonical);
  auto key = sigv4::signing_key(kSuiteSecret, "20150830", "us-east-1", "service");
  return sigv4::signature(key, sigv4::string_to_sign(kSuiteDate, "20150830/us-east-1/service/aws4_request", *canonical));
}

const std::vector<std::pair<std::string, std::string>> kSuiteHeaders = {{"Host", "example.amazonaws.com"},
                                                                        {"X-Amz-Date", kSuiteDate}};
const std::vector<std::string> kHostDate = {"host", "x-amz-date"};

}  // namespace

TEST_CASE("sigv4: AWS's published test vectors") {
  // get-vanilla
  CHECK(suite_signature("GET", "/", kSuiteHeaders, kEmptySha, kHostDate) ==
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
  // get-vanilla-query-order-key-case: parameters are sorted before signing.
  CHECK(suite_signature("GET", "/?Param2=value2&Param1=value1", kSuiteHeaders, kEmptySha, kHostDate) ==
        "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500");
  // post-vanilla
  CHECK(suite_signature("POST", "/", kSuiteHeaders, kEmptySha, kHostDate) ==
        "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b");
  // get-utf8: the raw path U+1234 is encoded once as /%E1%88%B4.
  CHECK(suite_signature("GET", "/\xE1\x88\xB4", kSuiteHeaders, kEmptySha, kHostDate) ==
        "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85");
  // get-relative, get-relative-relative: normalized to "/", so get-vanilla's signature.
  CHECK(suite_signature("GET", "/example/..", kSuiteHeaders, kEmptySha, kHostDate) ==
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
  CHECK(suite_signature("GET", "/example1/example2/../..", kSuiteHeaders, kEmptySha, kHostDate) ==
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");

  // The documentation's signing key example (IAM, us-east-1, 20150830) and its ListUsers request.
  CHECK(sigv4::hex(sigv4::signing_key(kSuiteSecret, "20150830", "us-east-1", "iam")) ==
        "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9");
  sigv4::SignedRequest list_users{"GET",
                                  "/?Action=ListUsers&Version=2010-05-08",
                                  {{"Content-Type", "application/x-www-form-urlencoded; charset=utf-8"},
                                   {"Host", "iam.amazonaws.com"},
                                   {"X-Amz-Date", kSuiteDate}},
                                  kEmptySha};
  auto canonical = sigv4::canonical_request(list_users, {"content-type", "host", "x-amz-date"});
  REQUIRE(canonical);
  CHECK(*canonical ==
        "GET\n/\nAction=ListUsers&Version=2010-05-08\ncontent-type:application/x-www-form-urlencoded; "
        "charset=utf-8\nhost:iam.amazonaws.com\nx-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n" +
            std::string(kEmptySha));
  CHECK(sigv4::sha256_hex(*canonical) == "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59");
  auto key = sigv4::signing_key(kSuiteSecret, "20150830", "us-east-1", "iam");
  CHECK(sigv4::signature(key, sigv4::string_to_sign(kSuiteDate, "20150830/us-east-1/iam/aws4_request", *canonical)) ==
        "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7");
}

TEST_CASE("sigv4: canonical forms") {
  // Services other than S3 sign the path encoded twice: %3A arrives and is signed as %253A.
  CHECK(sigv4::canonical_uri("/2015-03-31/functions/arn%3Aaws%3Alambda/invocations") ==
        "/2015-03-31/functions/arn%253Aaws%253Alambda/invocations");
  CHECK(sigv4::canonical_uri("//example//") == "/example/");
  CHECK(sigv4::canonical_uri("/./a/./b/../c") == "/a/c");
  CHECK(sigv4::canonical_uri("/example space/") == "/example%20space/");
  CHECK(sigv4::canonical_uri("") == "/");
  CHECK(sigv4::canonical_query("b=2&a=1&a=0&c") == "a=0&a=1&b=2&c=");
  CHECK(sigv4::canonical_query("k=a%2Fb&sp=%20x") == "k=a%2Fb&sp=%20x");
  CHECK(sigv4::canonical_query("Marker=x~y.z") == "Marker=x~y.z");
  // Header values: outer whitespace trimmed, inner runs collapsed; repeats joined by commas.
  sigv4::SignedRequest r{"GET", "/", {{"X-A", "  a   b  "}, {"x-b", "1"}, {"X-B", "2"}, {"Host", "h"}}, kEmptySha};
  auto c = sigv4::canonical_request(r, {"host", "x-a", "x-b"});
  REQUIRE(c);
  CHECK(c->find("host:h\nx-a:a b\nx-b:1,2\n") != std::string::npos);
  CHECK(!sigv4::canonical_request(r, {"host", "x-missing"}));
}

TEST_CASE("sigv4: the Authorization header, keys, scope and clock") {
  auto a = sigv4::parse_authorization(
      "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, "
      "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
  REQUIRE(a);
  CHECK(a->access_key == "AKID");
  CHECK(a->scope() == "20150830/us-east-1/lambda/aws4_request");
  CHECK(a->signed_headers == std::vector<std::string>{"host", "x-amz-date"});
  for (const char* bad : {"", "Bearer x", "AWS4-HMAC-SHA256", "AWS4-HMAC-SHA256 Credential=AKID/2015/us/x/aws4_request",
                          "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/lambda/aws4_request, "
                          "SignedHeaders=host, Signature=XYZ",
                          "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/lambda/aws4_request, SignedHeaders=, "
                          "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"})
    CHECK_MESSAGE(!sigv4::parse_authorization(bad), bad);

  std::map<std::string, std::string> keys = {{"AKID", "secret-secret-secret"}};
  auto now = *sigv4::parse_amz_date("20150830T123600Z");
  sigv4::VerifyOptions o{now, std::chrono::seconds(300), "us-east-1", "lambda"};
  std::string header =
      "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, "
      "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
  CHECK(sigv4::check_header(header, "20150830T123600Z", keys, o));
  CHECK(sigv4::check_header(header, "20150830T123200Z", keys, o));  // 4 minutes away: within the 5
  auto skewed = sigv4::check_header(header, "20150830T122900Z", keys, o);
  REQUIRE(!skewed);
  CHECK(skewed.error().type == "InvalidSignatureException");
  CHECK(skewed.error().message.starts_with("Signature expired"));
  auto unknown = sigv4::check_header(header, "20150830T123600Z", {}, o);
  REQUIRE(!unknown);
  CHECK(unknown.error().type == "UnrecognizedClientException");
  o.region = "eu-west-3";
  auto region = sigv4::check_header(header, "20150830T123600Z", keys, o);
  REQUIRE(!region);
  CHECK(region.error().message.find("lambda_region") != std::string::npos);

  // A request signed by the same functions verifies; any change to it does not.
  o.region = "us-east-1";
  sigv4::SignedRequest req{"POST",
                           "/2015-03-31/functions/f/invocations",
                           {{"Host", "127.0.0.1:9"}, {"X-Amz-Date", "20150830T123600Z"}},
                           sigv4::sha256_hex("{}")};
  auto canonical = sigv4::canonical_request(req, kHostDate);
  auto sig = sigv4::signature(sigv4::signing_key("secret-secret-secret", "20150830", "us-east-1", "lambda"),
                              sigv4::string_to_sign("20150830T123600Z", "20150830/us-east-1/lambda/aws4_request", *canonical));
  auto auth = sigv4::check_header(
      "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, "
      "Signature=" + sig,
      "20150830T123600Z", keys, o);
  REQUIRE(auth);
  CHECK(sigv4::verify(*auth, req, "20150830T123600Z", "secret-secret-secret"));
  CHECK(!sigv4::verify(*auth, req, "20150830T123600Z", "another-secret-secret"));
  auto tampered = req;
  tampered.payload_hash = sigv4::sha256_hex("{\"x\":1}");
  CHECK(!sigv4::verify(*auth, tampered, "20150830T123600Z", "secret-secret-secret"));
  tampered = req;
  tampered.target = "/2015-03-31/functions/g/invocations";
  CHECK(!sigv4::verify(*auth, tampered, "20150830T123600Z", "secret-secret-secret"));
}

TEST_CASE("lambda: FunctionName forms, qualifiers and hostile names") {
  LambdaSettings s{"eu-west-3", "123456789012"};
  auto ok = [&](std::string_view text, std::string_view qualifier = "") {
    auto r = parse_function_ref(text, qualifier, s);
    INFO(text << ": " << (r ? "" : r.error().message()));
    REQUIRE(r);
    return r->name;
  };
  CHECK(ok("hello") == "hello");
  CHECK(ok("hello:$LATEST") == "hello");
  CHECK(ok("hello", "$LATEST") == "hello");
  CHECK(ok("123456789012:function:hello") == "hello");
  CHECK(ok("arn:aws:lambda:eu-west-3:123456789012:function:hello") == "hello");
  CHECK(ok("arn:aws:lambda:eu-west-3:123456789012:function:hello:$LATEST") == "hello");
  auto kind = [&](std::string_view text, std::string_view qualifier = "") {
    auto r = parse_function_ref(text, qualifier, s);
    REQUIRE_MESSAGE(!r, text);
    return r.error().kind;
  };
  CHECK(kind("hello:v1") == ErrorKind::not_found);
  CHECK(kind("hello", "prod") == ErrorKind::not_found);
  CHECK(kind("arn:aws:lambda:us-east-1:123456789012:function:hello") == ErrorKind::not_found);
  CHECK(kind("arn:aws:lambda:eu-west-3:999999999999:function:hello") == ErrorKind::not_found);
  CHECK(kind("999999999999:function:hello") == ErrorKind::not_found);
  for (const std::string& bad : std::vector<std::string>{"", ":", "hello:", "hello:a:b", "../etc", "a/b", "he llo", std::string("a\0b", 3),
                          "arn:aws:lambda:eu-west-3:12:function:hello", "arn:aws:s3:eu-west-3:123456789012:function:x",
                          "arn:aws:lambda:eu-west-3:123456789012:layer:x", "arn:aws:lambda", std::string(65, 'a'),
                          std::string(171, 'a'), "hello:v%1"})
    CHECK_MESSAGE(kind(bad) == ErrorKind::invalid, bad);
  CHECK(kind("hello:$LATEST", "v2") == ErrorKind::invalid);  // the two qualifiers disagree
  CHECK(function_arn(s, "f") == "arn:aws:lambda:eu-west-3:123456789012:function:f");
  CHECK(request_id_of("0123456789abcdef0123456789abcdef") == "01234567-89ab-cdef-0123-456789abcdef");
  CHECK(lambda_timestamp(1764723041123) == "2025-12-03T00:50:41.123+0000");
}

TEST_CASE("lambda: errors, the Tail log and the function configuration") {
  auto e = lambda_error(429, "TooManyRequestsException", "Rate \"Exceeded\"");
  CHECK(e.status == 429);
  CHECK(e.body == R"({"Type":"User","message":"Rate \"Exceeded\""})");
  CHECK(e.headers.at(0) == std::pair<std::string, std::string>("x-amzn-ErrorType", "TooManyRequestsException"));
  CHECK(lambda_error(500, "ServiceException", "x").body.find(R"("Type":"Service")") != std::string::npos);

  pool::FunctionSpec spec;
  spec.name = "f";
  spec.limits.memory_bytes = uint64_t{128} << 20;
  pool::InvocationResult res;
  res.record.wall_us = 1500;
  res.record.memory_peak_bytes = (uint64_t{20} << 20) + 1;
  res.log = "line one\nline two";
  res.init_us = 12345;
  auto log = tail_log("rid", res, spec);
  CHECK(log == "START RequestId: rid Version: $LATEST\nline one\nline two\nEND RequestId: rid\n"
               "REPORT RequestId: rid\tDuration: 1.50 ms\tBilled Duration: 2 ms\tMemory Size: 128 MB\t"
               "Max Memory Used: 21 MB\tInit Duration: 12.35 ms\t\n");
  res.log = std::string(10000, 'x');
  log = tail_log("rid", res, spec);
  CHECK(log.size() == 4096);  // the last 4 KiB, as Lambda returns
  CHECK(log.ends_with("\t\n"));
  CHECK(log.find("REPORT RequestId: rid") != std::string::npos);

  spec.timeout = std::chrono::milliseconds(2500);
  spec.env = {"A=1", "B=x=y"};
  spec.cmd = std::vector<std::string>{"/bin/sh", "-c", "cat"};
  auto json = function_configuration_json({spec, ""}, 0, LambdaSettings{});
  for (const char* want : {R"("FunctionName":"f")", R"("FunctionArn":"arn:aws:lambda:us-east-1:000000000000:function:f")",
                           R"("Timeout":3)", R"("MemorySize":128)", R"("LastModified":"1970-01-01T00:00:00.000+0000")",
                           R"("State":"Active")", R"("Variables":{"A":"1","B":"x=y"})",
                           R"("Command":["/bin/sh","-c","cat"])", R"("PackageType":"Image")"})
    CHECK_MESSAGE(json.find(want) != std::string::npos, want << " in " << json);
  CHECK(json.find(R"("CodeSize":0,"Description")") != std::string::npos);  // no pinned image: no CodeSha256
  // The manifest digest's 32 bytes in base64 (here: the SHA-256 of nothing).
  auto digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  CHECK(code_sha256(digest) == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
  CHECK(code_sha256("sha512:e3b0").empty());
  CHECK(code_sha256("sha256:zz").empty());
  FunctionImage image{digest, 4096};
  auto pinned = function_configuration_json({spec, ""}, 0, LambdaSettings{}, &image);
  CHECK(pinned.find(R"("CodeSize":4096,"CodeSha256":"47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")") != std::string::npos);
  auto failed = function_configuration_json({spec, "image gone"}, 0, LambdaSettings{});
  CHECK(failed.find(R"("State":"Failed","StateReason":"image gone")") != std::string::npos);
}

TEST_CASE("lambda: the replay cache runs one request per key and keeps only final replies") {
  ReplayCache cache(ReplayCache::Limits{2, 1 << 20, std::chrono::seconds(600)});
  std::vector<Reply> got;
  Respond record = [&](Reply r) { got.push_back(std::move(r)); };
  Respond r1 = record, r2 = record, r3 = record;
  CHECK(cache.begin("k", r1));       // the first one runs
  CHECK(!cache.begin("k", r2));      // a retry while it runs waits
  CHECK(got.empty());
  cache.finish("k", Reply{200, "application/json", "done", {}});
  REQUIRE(got.size() == 1);          // the waiting retry got the reply
  CHECK(got[0].body == "done");
  CHECK(!cache.begin("k", r3));      // a later retry gets it at once
  REQUIRE(got.size() == 2);
  CHECK(got[1].body == "done");

  // 429 and 5xx ran nothing: the retry runs.
  Respond r4 = record, r5 = record;
  CHECK(cache.begin("t", r4));
  cache.finish("t", Reply{429, "application/json", "busy", {}});
  CHECK(cache.begin("t", r5));
  cache.finish("t", Reply{200, "application/json", "ok", {}});

  // Bounded: a third finished key pushes out the oldest.
  Respond r6 = record, r7 = record;
  CHECK(cache.begin("u", r6));
  cache.finish("u", Reply{200, "application/json", "u", {}});
  CHECK(cache.size() == 2);
  CHECK(cache.begin("k", r7));
}

TEST_CASE("lambda: routes and config keys") {
  auto inv = route("POST", "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aeu-west-3%3A123456789012%3Afunction%3Af/invocations");
  CHECK(inv.route == Route::lambda_invoke);
  CHECK(inv.lambda);
  CHECK(inv.param == "arn:aws:lambda:eu-west-3:123456789012:function:f");
  CHECK(route("GET", "/2015-03-31/functions/").route == Route::lambda_functions_list);
  CHECK(route("GET", "/2015-03-31/functions/f").route == Route::lambda_function_get);
  CHECK(route("GET", "/2015-03-31/functions/f/configuration").route == Route::lambda_function_config);
  auto wrong = route("PUT", "/2015-03-31/functions/f/invocations");
  CHECK(wrong.route == Route::method_not_allowed);
  CHECK(wrong.lambda);
  CHECK(route("GET", "/2015-03-31/event-source-mappings").lambda);
  CHECK(!route("GET", "/v1/functions").lambda);
  auto bad = route("POST", "/2015-03-31/functions/%zz/invocations");
  CHECK(bad.route == Route::bad_request);
  CHECK(bad.lambda);

  ServeConfig c;
  REQUIRE(apply_settings(c, *parse_config_text("access_key = AKID1 0123456789abcdef0123\naccess_key = AKID2 "
                                               "fedcba9876543210fedc\nlambda_region = eu-west-3\n"
                                               "lambda_account_id = 123456789012\n",
                                               "test")));
  CHECK(c.access_keys.size() == 2);
  CHECK(c.access_keys.at("AKID2") == "fedcba9876543210fedc");
  CHECK(c.lambda.region == "eu-west-3");
  CHECK(c.lambda.account_id == "123456789012");
  for (const char* bad_line : {"access_key = AKID", "access_key = AKID short", "access_key = AK/ID 0123456789abcdef0123",
                               "lambda_region = EU WEST", "lambda_account_id = 12"}) {
    ServeConfig x;
    auto r = apply_settings(x, *parse_config_text(bad_line, "test"));
    CHECK_MESSAGE(!r, bad_line);
    if (!r) CHECK(r.error().message().find("0123456789abcdef0123") == std::string::npos);  // secrets stay out
  }
}
