// The runtime helpers' example handlers packaged by mkimage (--python, --node, --host-binary,
// --busybox, --fnexec-runtime) and run in a real sandbox by `fnexec run`, in the oneshot lifecycle:
// the images the lifecycle tests and the bench build. The fnexec/1 side is tested without a sandbox
// in tests/unit/test_runtime_helpers.cc.
#include <doctest/doctest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "support/fixtures.h"
#include "support/proc.h"
#include "util/fs.h"

namespace fnexec::test {
namespace {

namespace stdfs = std::filesystem;

// Builds an image from mkimage arguments and runs args in it with stdin; returns the run.
ProcResult build_and_run(const std::vector<std::string>& mkimage_args, const std::vector<std::string>& args,
                         const std::string& stdin_data) {
  ScratchTmpfs scratch("512m");
  std::vector<std::string> mk{rootfs_tool("mkimage").string(), "--compression", "none"};
  mk.insert(mk.end(), mkimage_args.begin(), mkimage_args.end());
  mk.insert(mk.end(), {"-o", (scratch / "image").string()});
  auto built = run(mk);
  REQUIRE_MESSAGE(built.exit_code == 0, built.err);
  std::vector<std::string> full{"--root", (scratch / "store").string(), "run",
                                "oci:" + (scratch / "image").string(), "--"};
  full.insert(full.end(), args.begin(), args.end());
  return fnexec(full, {.stdin_data = stdin_data});
}

const std::string kBinary("\xff\0bytes\n", 8);

}  // namespace

TEST_SUITE("frames") {
  TEST_CASE("a Python image from mkimage --python runs the helper's example") {
    if (!fs::find_in_path("python3") || !stdfs::exists("/usr/bin/python3")) {
      MESSAGE("/usr/bin/python3 is not installed: skipping");
      return;
    }
    auto examples = (runtime_helpers() / "examples/python").string();
    std::vector<std::string> mk{"--python", "--fnexec-runtime", "--dir", examples};
    auto json =
        build_and_run(mk, {"python3", "/opt/fnexec/fnexec_runtime.py", "handler.handler"}, R"({"a": 1})");
    CHECK_MESSAGE(json.exit_code == 0, json.err);
    CHECK(json.out.find(R"("event":{"a":1},"seen":1)") != std::string::npos);
    auto raw = build_and_run(mk, {"python3", "/opt/fnexec/fnexec_runtime.py", "handler.handler"}, kBinary);
    CHECK(raw.out == kBinary);
    auto plain = build_and_run(
        {"--python"}, {"python3", "-c", "import json,sys; print(json.load(sys.stdin))"}, R"({"a":1})");
    CHECK(plain.out == "{'a': 1}\n");
  }

  TEST_CASE("a Node.js image from mkimage --node runs the helper's example") {
    if (!stdfs::exists("/usr/bin/node")) {
      MESSAGE("/usr/bin/node is not installed: skipping (apt-get install nodejs)");
      return;
    }
    auto examples = (runtime_helpers() / "examples/node").string();
    std::vector<std::string> mk{"--node", "--fnexec-runtime", "--dir", examples};
    auto json =
        build_and_run(mk, {"node", "/opt/fnexec/fnexec_runtime.js", "./index.handler"}, R"({"print": "hi"})");
    CHECK_MESSAGE(json.exit_code == 0, json.err);
    CHECK(json.out.find(R"("event":{"print":"hi"},"seen":1)") != std::string::npos);
    CHECK(json.err.find("hi\n") != std::string::npos);  // console.log is the log
    auto raw = build_and_run(mk, {"node", "/opt/fnexec/fnexec_runtime.js", "./index.handler"}, kBinary);
    CHECK(raw.out == kBinary);
  }

  TEST_CASE("the C example and the shell example run in busybox images") {
    auto c = build_and_run({"--host-binary", example_c_echo().string() + "=/echo"}, {"/echo"}, kBinary);
    CHECK_MESSAGE(c.exit_code == 0, c.err);
    CHECK(c.out == kBinary);
    auto sh = build_and_run({"--busybox", "--fnexec-runtime", "--file",
                             (runtime_helpers() / "examples/shell/handler.sh").string() + "=/handler.sh"},
                            {"/bin/sh", "/handler.sh"}, kBinary);
    CHECK_MESSAGE(sh.exit_code == 0, sh.err);
    CHECK(sh.out == kBinary);
  }
}

}  // namespace fnexec::test
