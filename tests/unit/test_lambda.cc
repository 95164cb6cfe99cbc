// protocol lambda without a sandbox: the function fields and their rules, the environment a Lambda
// runtime is given, and the handler Lambda's image layout implies.
#include <doctest/doctest.h>

#include <algorithm>

#include "lambda/runtime_api.h"
#include "server/api.h"

using namespace fnexec;

namespace {

bool has_env(const std::vector<std::string>& env, const std::string& kv) {
  return std::find(env.begin(), env.end(), kv) != env.end();
}

}  // namespace

TEST_SUITE("lambda") {
  TEST_CASE("protocol and handler fields: defaults, lambda implies reuse, mistakes named") {
    server::FunctionDefaults defaults;
    auto plain = server::parse_function_spec("f", R"({"image":"x:1"})", defaults);
    REQUIRE(plain);
    CHECK(plain->protocol == pool::Protocol::fnexec);
    CHECK(plain->handler.empty());

    auto lam = server::parse_function_spec("f", R"({"image":"x:1","protocol":"lambda","handler":"app.h"})",
                                           defaults);
    REQUIRE(lam);
    CHECK(lam->protocol == pool::Protocol::lambda);
    CHECK(lam->lifecycle == pool::Lifecycle::reuse);
    CHECK(lam->handler == "app.h");
    auto json = server::function_spec_json(*lam);
    CHECK(json.find(R"("protocol":"lambda","handler":"app.h")") != std::string::npos);
    // What GET returns parses back to the same function.
    auto again = server::parse_function_spec("f", json, defaults);
    REQUIRE(again);
    CHECK(again->protocol == pool::Protocol::lambda);
    CHECK(again->lifecycle == pool::Lifecycle::reuse);

    auto fresh = server::parse_function_spec(
        "f", R"({"image":"x:1","protocol":"lambda","lifecycle":"fresh"})", defaults);
    REQUIRE(fresh);
    CHECK(fresh->lifecycle == pool::Lifecycle::fresh);

    auto oneshot = server::parse_function_spec(
        "f", R"({"image":"x:1","protocol":"lambda","lifecycle":"oneshot"})", defaults);
    REQUIRE(!oneshot);
    CHECK(oneshot.error().message().find("protocol lambda needs reuse") != std::string::npos);
    auto bogus = server::parse_function_spec("f", R"({"image":"x:1","protocol":"http"})", defaults);
    REQUIRE(!bogus);
    CHECK(bogus.error().message().find(R"(must be fnexec or lambda, got "http")") != std::string::npos);
    auto stray = server::parse_function_spec("f", R"({"image":"x:1","handler":"a.b"})", defaults);
    REQUIRE(!stray);
    CHECK(stray.error().message().find("applies to protocol lambda only") != std::string::npos);
  }

  TEST_CASE("the runtime's environment: reserved variables always, defaults only where unset") {
    std::vector<std::string> env = {"PATH=/bin", "AWS_REGION=eu-west-1", "TZ=Europe/Paris", "_HANDLER=stale"};
    lambda::FunctionFacts facts{
        .name = "fn", .handler = "app.handler", .task_root = "/var/task", .memory_mb = 128};
    lambda::set_runtime_env(env, facts);
    CHECK(facts.region == "eu-west-1");
    CHECK(lambda::function_arn(facts) == "arn:aws:lambda:eu-west-1:000000000000:function:fn");
    for (const char* kv : {"AWS_LAMBDA_RUNTIME_API=127.0.0.1:9001", "_HANDLER=app.handler",
                           "AWS_LAMBDA_FUNCTION_NAME=fn", "AWS_LAMBDA_FUNCTION_VERSION=$LATEST",
                           "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128", "AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/fn",
                           "LAMBDA_TASK_ROOT=/var/task", "LAMBDA_RUNTIME_DIR=/var/runtime",
                           "AWS_REGION=eu-west-1", "AWS_DEFAULT_REGION=eu-west-1", "TZ=Europe/Paris"})
      CHECK_MESSAGE(has_env(env, kv), kv);
    CHECK(!has_env(env, "_HANDLER=stale"));
    CHECK(std::count_if(env.begin(), env.end(), [](auto& e) { return e.starts_with("_HANDLER="); }) == 1);
  }

  TEST_CASE("the default handler: Lambda's images have the runtime as entrypoint and the handler as CMD") {
    CHECK(lambda::default_handler({"/lambda-entrypoint.sh"}, {"app.handler"}) == "app.handler");
    CHECK(lambda::default_handler({"/lambda-entrypoint.sh"}, {}).empty());
    CHECK(lambda::default_handler({}, {"python3", "/var/runtime/bootstrap.py", "app.handler"}) ==
          "app.handler");
    CHECK(lambda::default_handler({}, {"/var/runtime/bootstrap"}).empty());
  }
}
