// fnexec: a container-isolated function executor on the Linux kernel directly.
#include <cstdio>
#include <cstdlib>

#include "cli/commands.h"
#include "util/log.h"

namespace fnexec::cli {

int report(const Error& e) {
  std::fprintf(stderr, "%sfnexec: %s\n", fnexec::log::to_journal() ? "<3>" : "", e.message().c_str());
  return kExitFnexecError;
}

}  // namespace fnexec::cli

int main(int argc, char** argv) {
  using namespace fnexec::cli;
  fnexec::log::init();
  CLI::App app{"fnexec: run functions from OCI images in kernel sandboxes", "fnexec"};
  app.require_subcommand(1);
  Globals g;
  const char* env_root = std::getenv("FNEXEC_ROOT");
  g.root = env_root && *env_root ? env_root : "/var/lib/fnexec";
  app.add_option("--root", g.root, "state directory (env FNEXEC_ROOT)")->capture_default_str();
  app.set_version_flag("--version", "fnexec 0.1.0");

  add_image_commands(app, g);
  add_run_command(app, g);
  add_info_command(app, g);
  add_serve_command(app, g);
  add_fn_commands(app, g);
  add_invoke_command(app, g);
  add_invocations_command(app, g);
  add_dead_letters_command(app, g);
  add_logs_command(app, g);
  add_cluster_command(app, g);
  add_bench_command(app, g);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : kExitFnexecError;
  }
  return g.exit_code;
}
