#include "cli/commands.h"

namespace fnexec::cli {

void add_info_command(CLI::App& app, Globals& g) {
  auto* sub = app.add_subcommand("info", "not implemented yet");
  sub->callback([&g] { g.exit_code = report(fail(ErrorKind::unavailable, "info", {}, "not implemented yet").error()); });
}

}  // namespace fnexec::cli
