#include "cli/commands.h"

namespace fnexec::cli {

void add_run_command(CLI::App& app, Globals& g) {
  auto* sub = app.add_subcommand("run", "not implemented yet");
  sub->callback([&g] { g.exit_code = report(fail(ErrorKind::unavailable, "run", {}, "not implemented yet").error()); });
}

}  // namespace fnexec::cli
