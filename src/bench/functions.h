// The functions a bench runs: the busybox applets true and cat (event in, nothing / the same bytes
// out), and handlers on real runtimes that answer a JSON event with that JSON re-serialized
// (python: json.loads → json.dumps, node: JSON.parse → JSON.stringify) or with its bytes (c: the
// example echo), built on fnexec's runtime helpers so they run oneshot and speak fnexec/1 under
// the lifecycles fresh and reuse.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "image/store.h"
#include "util/error.h"

namespace fnexec::bench {

// true, cat, python, node, c.
bool is_bench_function(std::string_view name);
// python, node and c speak fnexec/1 (fresh, reuse); the busybox applets only run oneshot.
bool speaks_frames(std::string_view name);
// A function that needs the runtime image (not busybox alone).
bool needs_runtime_image(std::string_view name);

// The function's command inside its image.
std::vector<std::string> function_argv(std::string_view name);

// The same function as a host process on a copy of the image's rootfs (the interpreter is the
// host's, which is the image's: mkimage copies it): what the function costs without a sandbox.
struct HostCommand {
  std::string path;
  std::vector<std::string> argv;
};
Result<HostCommand> host_command(std::string_view name, const std::filesystem::path& rootfs);

// The C example echo (runtime/helpers/examples/c/echo.c) as built: $FNEXEC_EXAMPLE_C, or
// runtime/helpers/fnexec-example-c-echo in the fnexec binary's build tree.
std::optional<std::filesystem::path> find_c_echo();

// Builds the runtime image with mkimage as an oci-archive at archive and imports it into store:
// busybox, the host's python3 with its stdlib (python), node (node), the runtime helpers at
// /opt/fnexec, the handlers at /bench/handler.py and /bench/index.js, and c_echo at /bench/echo.
struct RuntimeImageParts {
  bool python = false, node = false;
  std::optional<std::filesystem::path> c_echo;
};
Result<image::ResolvedImage> build_runtime_image(image::Store& store, const std::filesystem::path& mkimage,
                                                 const std::filesystem::path& work,
                                                 const std::filesystem::path& archive,
                                                 const RuntimeImageParts& parts);

}  // namespace fnexec::bench
