// fnexec: a container-isolated function executor on the Linux kernel directly.
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "cli/commands.h"
#include "util/log.h"

namespace fnexec::cli {

int report(const Error& e) {
  std::fprintf(stderr, "%sfnexec: %s\n", fnexec::log::to_journal() ? "<3>" : "", e.message().c_str());
  return kExitFnexecError;
}

namespace {

struct CommandEntry {
  std::string_view name;
  void (*add)(CLI::App&, Globals&);
};
constexpr CommandEntry kCommands[] = {
    {"image", add_image_commands},
    {"run", add_run_command},
    {"info", add_info_command},
    {"serve", add_serve_command},
    {"fn", add_fn_commands},
    {"invoke", add_invoke_command},
    {"invocations", add_invocations_command},
    {"dead-letters", add_dead_letters_command},
    {"logs", add_logs_command},
    {"cluster", add_cluster_command},
    {"bench", add_bench_command},
};

// What to build of the command tree for these arguments: building all of it (every option,
// validator and help string of every subcommand) was ~40% of the heap and page faults of a
// `fnexec run`'s start. The subcommand named by the first argument that is not fnexec's own
// option: only that one; `fnexec --version` alone: none; anything else (help, errors): all.
enum class Build { one, none, all };
Build commands_to_build(int argc, char** argv, const CommandEntry** entry) {
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--root") {
      ++i;
      continue;
    }
    if (arg.starts_with("--root=")) continue;
    if (arg == "--version") return argc == 2 ? Build::none : Build::all;
    if (arg.starts_with("-")) return Build::all;
    for (const auto& c : kCommands)
      if (c.name == arg) {
        *entry = &c;
        return Build::one;
      }
    return Build::all;
  }
  return Build::all;
}

}  // namespace

}  // namespace fnexec::cli

int main(int argc, char** argv) {
  using namespace fnexec::cli;
  fnexec::log::init();
  CLI::App app{"fnexec: run functions from OCI images in kernel sandboxes", "fnexec"};
  Globals g;
  const char* env_root = std::getenv("FNEXEC_ROOT");
  g.root = env_root && *env_root ? env_root : "/var/lib/fnexec";
  app.add_option("--root", g.root, "state directory (env FNEXEC_ROOT)")->capture_default_str();
  app.set_version_flag("--version", "fnexec 0.1.0");

  const CommandEntry* entry = nullptr;
  switch (commands_to_build(argc, argv, &entry)) {
    case Build::one:
      entry->add(app, g);
      break;
    case Build::none:
      break;
    case Build::all:
      for (const auto& c : kCommands) c.add(app, g);
      break;
  }
  app.require_subcommand(1);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : kExitFnexecError;
  }
  return g.exit_code;
}
