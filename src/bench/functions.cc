#include "bench/functions.h"

#include <unistd.h>

#include <cstdlib>

#include "bench/peers.h"
#include "util/fs.h"

namespace fnexec::bench {

namespace stdfs = std::filesystem;

namespace {

// The handlers find the runtime helper relative to themselves (/bench/../opt/fnexec), so the same
// file runs in the image and, for the host peers, from a copy of its rootfs.
constexpr std::string_view kPythonHandler = R"(import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "opt", "fnexec"))
import fnexec_runtime  # noqa: E402


def handler(event, context):
    return json.dumps(event)


if __name__ == "__main__":
    fnexec_runtime.serve(handler)
)";

constexpr std::string_view kNodeHandler = R"('use strict';
const path = require('path');
const runtime = require(path.join(__dirname, '..', 'opt', 'fnexec', 'fnexec_runtime.js'));

exports.handler = async (event) => JSON.stringify(event);

if (require.main === module) runtime.serve(exports.handler);
)";

}  // namespace

bool is_bench_function(std::string_view name) {
  return name == "true" || name == "cat" || speaks_frames(name);
}

bool speaks_frames(std::string_view name) {
  return name == "python" || name == "node" || name == "c";
}

bool needs_runtime_image(std::string_view name) {
  return speaks_frames(name);
}

std::vector<std::string> function_argv(std::string_view name) {
  if (name == "python") return {"/usr/bin/python3", "/bench/handler.py"};
  if (name == "node") return {"/usr/bin/node", "/bench/index.js"};
  if (name == "c") return {"/bench/echo"};
  return {"/bin/" + std::string(name)};
}

Result<HostCommand> host_command(std::string_view name, const stdfs::path& rootfs) {
  if (name == "python") return HostCommand{"/usr/bin/python3", {"python3", (rootfs / "bench/handler.py").string()}};
  if (name == "node") return HostCommand{"/usr/bin/node", {"node", (rootfs / "bench/index.js").string()}};
  if (name == "c") return HostCommand{(rootfs / "bench/echo").string(), {"echo"}};
  return fail(ErrorKind::invalid, "run as a host process", std::string(name), "not a runtime function");
}

std::optional<stdfs::path> find_c_echo() {
  std::vector<stdfs::path> candidates;
  if (const char* env = std::getenv("FNEXEC_EXAMPLE_C"); env && *env) candidates.push_back(env);
  std::error_code ec;
  auto exe = stdfs::read_symlink("/proc/self/exe", ec);
  if (!ec) candidates.push_back(exe.parent_path() / "runtime/helpers/fnexec-example-c-echo");
  for (const auto& c : candidates)
    if (::access(c.c_str(), X_OK) == 0) return c;
  return std::nullopt;
}

Result<image::ResolvedImage> build_runtime_image(image::Store& store, const stdfs::path& mkimage,
                                                 const stdfs::path& work, const stdfs::path& archive,
                                                 const RuntimeImageParts& parts) {
  auto handlers = work / "handlers";
  std::error_code ec;
  stdfs::create_directories(handlers, ec);
  if (ec) return fail_errno("create", handlers.string(), ec.value());
  FNEXEC_TRY(fs::write_file_atomic(handlers / "handler.py", std::string(kPythonHandler)));
  FNEXEC_TRY(fs::write_file_atomic(handlers / "index.js", std::string(kNodeHandler)));
  std::vector<std::string> argv{mkimage.string(), "--busybox"};
  if (parts.python) argv.push_back("--python");
  if (parts.node) argv.push_back("--node");
  // One layer for the bench's own files, on top of the runtimes.
  argv.push_back("--layer");
  argv.push_back("--fnexec-runtime");
  argv.insert(argv.end(), {"--file", (handlers / "handler.py").string() + "=/bench/handler.py", "--file",
                           (handlers / "index.js").string() + "=/bench/index.js"});
  if (parts.c_echo) argv.insert(argv.end(), {"--host-binary", parts.c_echo->string() + "=/bench/echo"});
  argv.insert(argv.end(), {"--ref", "bench:runtimes", "--compression", "none", "--mtime", "0", "--oci-archive",
                           archive.string()});
  std::string out;
  if (auto r = run_command({mkimage.string(), argv, -1}, {}, out); !r)
    return std::unexpected(r.error().context("build the runtime image (python, node, c)"));
  image::ImportOptions opts;
  opts.name = "bench:runtimes";
  return store.import("oci-archive:" + archive.string(), opts);
}

}  // namespace fnexec::bench
