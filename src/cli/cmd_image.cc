#include "cli/commands.h"

namespace fnexec::cli {

void add_image_commands(CLI::App& app, Globals& g) {
  auto* sub = app.add_subcommand("image", "not implemented yet");
  sub->callback([&g] { g.exit_code = report(fail(ErrorKind::unavailable, "image", {}, "not implemented yet").error()); });
}

}  // namespace fnexec::cli
