// The Lambda custom runtime in stdlib Python (tests/integration/lambda/python) as an image, shared by
// the serve and serve-lambda suites.
#pragma once

#include "test_serve_fixture.h"

namespace fnexec::test::serve {

inline stdfs::path lambda_sources() {
  return test::source_root() / "tests/integration/lambda";
}

// python3, the runtime at /var/runtime and the handler at /var/task, as a Lambda base image lays
// them out: ENTRYPOINT the runtime, CMD the handler, WORKDIR the task root. Built once per run.
inline const stdfs::path& python_lambda_archive() {
  static const test::ScratchTmpfs dir("256m");
  static const stdfs::path archive = [] {
    auto path = dir / "lambda-python.tar";
    auto py = lambda_sources() / "python";
    auto mk = test::run({test::rootfs_tool("mkimage").string(), "--compression", "none", "--python", "--file",
                         (py / "bootstrap.py").string() + "=/var/runtime/bootstrap.py", "--file",
                         (py / "hostile.py").string() + "=/var/runtime/hostile.py", "--file",
                         (py / "task/app.py").string() + "=/var/task/app.py", "--workdir", "/var/task",
                         "--entrypoint", R"(["python3","/var/runtime/bootstrap.py"])", "--cmd",
                         R"(["app.handler"])", "--oci-archive", path.string()});
    REQUIRE_MESSAGE(mk.exit_code == 0, mk.err);
    return path;
  }();
  return archive;
}

inline bool python_missing() {
  if (stdfs::exists("/usr/bin/python3")) return false;
  MESSAGE("/usr/bin/python3 is not installed: skipping (scripts/install-deps.sh installs it)");
  return true;
}

}  // namespace fnexec::test::serve
