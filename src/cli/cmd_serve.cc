// fnexec serve: the daemon (src/server/daemon.h).
#include <spdlog/spdlog.h>

#include <memory>

#include "cli/commands.h"
#include "server/daemon.h"
#include "util/log.h"

namespace fnexec::cli {

namespace {

struct ServeFlags {
  std::string config;
  std::string socket, listen, token_file, tls_cert, tls_key, state_dir, cgroups;
  std::string cluster_nats;
};

}  // namespace

void add_serve_command(CLI::App& app, Globals& g) {
  auto o = std::make_shared<ServeFlags>();
  auto* sub = app.add_subcommand("serve", "run the daemon: warm pools and the HTTP API (fnexec-serve(8))");
  sub->add_option("--config", o->config,
                  std::string("config file (default ") + server::kDefaultConfigFile + ")");
  sub->add_option("--socket", o->socket,
                  std::string("unix socket to listen on (default ") + server::kDefaultSocket + ")");
  sub->add_option("--listen", o->listen, "also listen on TCP HOST:PORT (needs --token-file)");
  sub->add_option("--token-file", o->token_file, "file holding the bearer token TCP clients must send");
  sub->add_option("--tls-cert", o->tls_cert, "PEM certificate chain: serve TCP over TLS 1.2+ (with --tls-key)");
  sub->add_option("--tls-key", o->tls_key, "PEM private key of --tls-cert");
  sub->add_option("--state-dir", o->state_dir, "state directory: images, database (default --root)");
  sub->add_option("--cgroups", o->cgroups, "auto (required) or disabled (no limits, no accounting)");
  sub->add_option("--cluster-nats", o->cluster_nats,
                  "join a cluster through NATS JetStream: nats://HOST:PORT[,...] (cluster_nats)");
  sub->callback([o, &g] {
    // The daemon logs from several threads: a thread-safe logger (its level comes from log_level).
    log::init(spdlog::level::info, log::Threads::many);

    server::ServeOptions options;
    if (!o->config.empty()) {
      options.config_file = o->config;
      options.config_file_given = true;
    }
    auto flag = [&](const char* key, const std::string& value, const char* origin) {
      if (!value.empty()) options.flags.push_back({key, value, origin});
    };
    // --root / FNEXEC_ROOT count as a flag only when they differ from the default.
    if (g.root != "/var/lib/fnexec") flag("state_dir", g.root, "--root");
    flag("state_dir", o->state_dir, "--state-dir");
    flag("socket", o->socket, "--socket");
    flag("listen", o->listen, "--listen");
    flag("token_file", o->token_file, "--token-file");
    flag("tls_cert", o->tls_cert, "--tls-cert");
    flag("tls_key", o->tls_key, "--tls-key");
    flag("cgroups", o->cgroups, "--cgroups");
    flag("cluster_nats", o->cluster_nats, "--cluster-nats");
    auto rc = server::serve(options);
    g.exit_code = rc ? *rc : report(rc.error());
  });
}

}  // namespace fnexec::cli
