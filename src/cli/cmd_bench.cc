// fnexec bench [IMAGE]: start latency and throughput of fnexec's cold and warm modes, side by side
// with the fork+exec floor, bwrap, crun and runc on the same rootfs and event, interleaved.
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "bench/api.h"
#include "bench/fnexec_targets.h"
#include "bench/peers.h"
#include "bench/report.h"
#include "bench/runner.h"
#include "bench/workspace.h"
#include "cgroup/cgroup.h"
#include "cli/commands.h"
#include "image/store.h"
#include "util/fs.h"
#include "util/log.h"

namespace fnexec::cli {

namespace {

namespace stdfs = std::filesystem;

struct BenchOptions {
  std::optional<std::string> image;
  unsigned runs = 200;
  unsigned warmup = 5;
  std::string modes = "cold,warm,run";
  std::string concurrency = "1";
  std::string peers = "floor,bwrap,crun,runc";
  std::string functions = "true,cat";
  std::optional<std::string> event_file, json, svg, markdown, mkimage;
  std::string scratch_parent = "/tmp";
  bool via_api = false;
  std::optional<std::string> socket;  // --via-api against this running daemon instead of one of its own
};

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

Result<std::vector<unsigned>> parse_levels(const std::string& s) {
  std::vector<unsigned> out;
  for (const auto& item : split_list(s)) {
    char* end = nullptr;
    unsigned long v = std::strtoul(item.c_str(), &end, 10);
    if (*end != '\0' || v == 0 || v > 256)
      return fail(ErrorKind::invalid, "use --concurrency", item,
                  "expected numbers from 1 to 256, e.g. 1,4,16");
    out.push_back(static_cast<unsigned>(v));
  }
  if (out.empty()) return fail(ErrorKind::invalid, "use --concurrency", s, "expected e.g. 1,4,16");
  return out;
}

// The default event: a small JSON document, as a function usually receives.
std::string default_event() {
  std::string e = R"({"id":"bench","payload":")";
  while (e.size() < 240) e += "0123456789abcdef";
  return e + "\"}\n";
}

Result<int> bench(Globals& g, const BenchOptions& o) {
  ::signal(SIGPIPE, SIG_IGN);  // a function may exit without reading its event
  bench::Report report;
  report.host = bench::read_host_context();
  report.runs = o.runs;
  report.warmup = o.warmup;
  if (o.runs == 0) return fail(ErrorKind::invalid, "use -n", "0", "give at least 1 run");
  report.concurrency = FNEXEC_TRY(parse_levels(o.concurrency));
  auto modes = split_list(o.modes);
  for (const auto& m : modes)
    if (m != "cold" && m != "warm" && m != "run")
      return fail(ErrorKind::invalid, "use --mode", m, "expected cold, warm and/or run (persistent: later)");
  auto functions = split_list(o.functions);
  for (const auto& f : functions)
    if (f != "true" && f != "cat")
      return fail(ErrorKind::invalid, "use --function", f, "expected true and/or cat");
  if (o.socket && !o.via_api)
    return fail(ErrorKind::invalid, "use --socket", *o.socket,
                "it names the daemon --via-api times invocations over; add --via-api");
  auto peer_names = o.peers == "none" ? std::vector<std::string>{} : split_list(o.peers);
  std::string event = default_event();
  if (o.event_file) event = FNEXEC_TRY(fs::read_file(*o.event_file));
  report.event_bytes = event.size();
  unsigned max_conc = *std::max_element(report.concurrency.begin(), report.concurrency.end());

  cgroup::Options cg_options;
  cg_options.allow_disabled = true;
  std::shared_ptr<cgroup::Hierarchy> cgroups;
  if (auto h = cgroup::Hierarchy::detect(cg_options)) {
    cgroups = *h;
    report.host.cgroup_mode = std::string(cgroup::to_string(cgroups->mode()));
    if (cgroups->mode() == cgroup::Mode::disabled) cgroups.reset();
    // A bench killed with SIGKILL or Ctrl-C leaves its sandboxes' (empty) cgroups; the next one
    // removes them, and only those whose fnexec is gone: `fnexec run`s may share the prefix.
    if (cgroups)
      if (auto r = cgroups->remove_stale(cgroup::owner_is_gone); r && *r > 0)
        spdlog::info("removed {} sandbox cgroups of fnexec processes that no longer exist", *r);
  } else {
    report.host.cgroup_mode = "unusable: " + h.error().message();
  }

  auto scratch = FNEXEC_TRY(bench::ScratchTmpfs::mount(o.scratch_parent, "1g"));
  std::optional<image::Store> store;
  image::ResolvedImage img;
  auto archive = scratch.path() / "busybox-oci.tar";
  if (o.image) {
    store.emplace(FNEXEC_TRY(image::Store::open(g.root)));
    img = FNEXEC_TRY(store->resolve(*o.image));
    report.image = *o.image;
  } else {
    auto mkimage = FNEXEC_TRY(bench::find_mkimage(o.mkimage));
    store.emplace(FNEXEC_TRY(image::Store::open(scratch.path() / "store")));
    img = FNEXEC_TRY(bench::build_busybox_image(*store, mkimage, archive));
    report.image = "busybox (built by rootfs-tools/mkimage into a scratch store on tmpfs)";
  }

  std::vector<bench::FnexecFunction> fnexec_functions;
  for (const auto& f : functions)
    fnexec_functions.push_back({img, {"/bin/" + f}, scratch.path() / "mnt", cgroups});

  // --via-api: cold and warm once more over fnexec serve's HTTP API (cold-api, warm-api), from one
  // daemon. Declared before the entries, so its destructor runs after theirs on every path.
  std::unique_ptr<bench::ApiServer> api;
  bool api_modes =
      std::any_of(modes.begin(), modes.end(), [](auto& m) { return m == "cold" || m == "warm"; });
  if (o.via_api && !api_modes) {
    report.skipped.push_back({"fnexec --via-api", "no cold or warm mode asked (--mode)"});
  } else if (o.via_api && o.image && !o.socket) {
    report.skipped.push_back(
        {"fnexec cold-api, warm-api",
         "with IMAGE, --via-api needs --socket of a daemon that has it (the bench's own daemon gets only the "
         "busybox image the bench builds)"});
  } else if (o.via_api) {
    bench::ApiOptions ao;
    ao.socket = o.socket;
    ao.work = scratch.path();
    ao.image = o.image;
    ao.archive = archive;
    ao.archive_digest = img.manifest_digest;
    ao.cgroups = cgroups;
    ao.max_concurrency = max_conc;
    if (auto a = bench::ApiServer::start(ao))
      api = std::move(*a);
    else
      report.skipped.push_back({"fnexec cold-api, warm-api", a.error().message()});
  }

  std::vector<bench::Entry> entries;
  auto expected = [&](const std::string& f) { return f == "cat" ? event : std::string(); };
  auto add_api_entries = [&](bool warm) {
    if (!api) return;
    std::string mode = warm ? "warm-api" : "cold-api";
    for (const auto& f : functions) {
      auto t = api->add_function(f, warm);
      if (!t)
        report.skipped.push_back({"fnexec " + mode + " " + f, t.error().message()});
      else
        entries.push_back({"fnexec", mode, f, *t, expected(f)});
    }
  };
  for (const auto& m : modes) {
    if (m == "cold") {
      for (const auto& fn : fnexec_functions) {
        auto t = bench::make_cold_target(fn);
        if (!t) {
          report.skipped.push_back({"fnexec cold", t.error().message()});
          break;
        }
        std::string f = fn.argv[0].substr(5);
        entries.push_back({"fnexec", "cold", f, *t, expected(f)});
      }
      add_api_entries(false);
    } else if (m == "run") {
      // The whole `fnexec run` process, as a user at a shell gets it: exec, image resolve, sandbox.
      for (const auto& f : functions) {
        bench::Command c{
            "/proc/self/exe",
            {"fnexec", "--root", store->root().string(), "run", img.manifest_digest, "--", "/bin/" + f},
            -1};
        entries.push_back({"fnexec", "run", f, bench::command_target({c}), expected(f)});
      }
    } else {
      auto ts = bench::make_warm_targets(*store, img.reference.empty() ? img.manifest_digest : img.reference,
                                         fnexec_functions, max_conc + 1);
      if (!ts)
        report.skipped.push_back({"fnexec warm", ts.error().message()});
      else
        for (size_t i = 0; i < ts->size(); ++i)
          entries.push_back({"fnexec", "warm", functions[i], (*ts)[i], expected(functions[i])});
      add_api_entries(true);
    }
  }

  if (!peer_names.empty()) {
    FNEXEC_TRY(bench::copy_rootfs(img, scratch.path(), scratch.path() / "rootfs"));
    bench::PeerOptions po{scratch.path() / "rootfs", scratch.path() / "bundles", peer_names, functions,
                          max_conc};
    auto peers = FNEXEC_TRY(bench::prepare_peers(po));
    for (auto& e : peers.entries) {
      e.expected_output = expected(e.function);
      entries.push_back(std::move(e));
    }
    report.skipped.insert(report.skipped.end(), peers.skipped.begin(), peers.skipped.end());
    report.notes.insert(report.notes.end(), peers.notes.begin(), peers.notes.end());
  }
  if (entries.empty())
    return fail(ErrorKind::unavailable, "bench", {}, "nothing to run: every mode and peer was skipped");

  bench::RunPlan plan;
  plan.runs = o.runs;
  plan.warmup = o.warmup;
  plan.concurrency = report.concurrency;
  plan.event = event;
  if (::isatty(2))
    plan.progress = [](std::string_view s) {
      std::fprintf(stderr, "\r\033[K%.*s", static_cast<int>(s.size()), s.data());
    };
  report.series = bench::run_interleaved(entries, plan, report.skipped);
  if (plan.progress) std::fputs("\r\033[K", stderr);
  for (const auto& e : entries)
    if (auto r = e.target->remarks(); !r.empty())
      report.notes.push_back(fmt::format("{} {} {}: {}", e.system, e.mode, e.function, r));
  if (api) report.notes.insert(report.notes.end(), api->notes().begin(), api->notes().end());
  entries.clear();  // ends pools and peers' resources before the scratch tmpfs goes
  api.reset();      // stops the bench's daemon and removes its functions, cgroups and directory
  bench::read_load(report.host.load_after);

  std::fputs(bench::to_table(report).c_str(), stdout);
  std::fflush(stdout);
  if (o.json) FNEXEC_TRY(fs::write_file_atomic(*o.json, bench::to_json(report)));
  if (o.markdown) FNEXEC_TRY(fs::write_file_atomic(*o.markdown, bench::to_markdown(report)));
  if (o.svg) FNEXEC_TRY(fs::write_file_atomic(*o.svg, bench::to_svg(report)));
  for (const auto& s : report.series)
    if (s.system == "fnexec" && s.failures) return 1;
  return 0;
}

}  // namespace

void add_bench_command(CLI::App& app, Globals& g) {
  auto* sub =
      app.add_subcommand("bench", "measure cold and warm start latency against floor, bwrap, crun, runc");
  auto o = std::make_shared<BenchOptions>();
  sub->add_option("IMAGE", o->image,
                  "a stored image with /bin/true and /bin/cat (default: busybox built on the fly)");
  sub->add_option("-n,--runs", o->runs, "timed invocations per series")->capture_default_str();
  sub->add_option("--warmup", o->warmup, "untimed invocations per series first")->capture_default_str();
  sub->add_option("--mode", o->modes, "fnexec modes: cold, warm, run (the whole `fnexec run` process)")
      ->capture_default_str();
  sub->add_option("--concurrency", o->concurrency, "levels: threads invoking at once, e.g. 1,4,16")
      ->capture_default_str();
  sub->add_option("--peers", o->peers, "floor, bwrap, crun, runc, or none")->capture_default_str();
  sub->add_option("--function", o->functions, "busybox functions: true, cat (event in, same bytes out)")
      ->capture_default_str();
  sub->add_option("--event", o->event_file,
                  "the event (stdin) for every invocation (default: 256 bytes of JSON)");
  sub->add_option("--json", o->json, "write every sample and the summary as JSON");
  sub->add_option("--svg", o->svg, "write a latency CDF chart (SVG, concurrency 1)");
  sub->add_option("--markdown", o->markdown, "write the tables and goals as Markdown");
  sub->add_flag("--via-api", o->via_api,
                "also time cold and warm invocations over fnexec serve's HTTP API on a unix socket "
                "(modes cold-api, warm-api), from a daemon the bench starts and removes");
  sub->add_option("--socket", o->socket,
                  "with --via-api: use the daemon running on this socket instead (registers and removes "
                  "functions bench-api-*)");
  sub->add_option("--mkimage", o->mkimage, "rootfs-tools/mkimage, for the default image");
  sub->add_option("--scratch", o->scratch_parent, "directory for the private scratch tmpfs")
      ->capture_default_str();
  sub->callback([&g, o] {
    auto r = bench(g, *o);
    g.exit_code = r ? *r : report(r.error());
  });
}

}  // namespace fnexec::cli
