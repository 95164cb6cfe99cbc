// fnexec bench [IMAGE]: start latency and throughput of fnexec's cold and warm modes, side by side
// with the fork+exec floor, bwrap, crun and runc on the same rootfs and event, interleaved.
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "bench/api.h"
#include "bench/fnexec_targets.h"
#include "bench/functions.h"
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
  std::string peers = "floor,pipe,bwrap,crun,runc";
  std::string functions = "true,cat";
  std::string lifecycles = "oneshot";
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
    if (!bench::is_bench_function(f))
      return fail(ErrorKind::invalid, "use --function", f, "expected true, cat, python, node and/or c");
  std::vector<pool::Lifecycle> lifecycles;
  for (const auto& l : split_list(o.lifecycles)) {
    auto lc = pool::parse_lifecycle(l);
    if (!lc) return fail(ErrorKind::invalid, "use --lifecycle", l, "expected oneshot, fresh and/or reuse");
    lifecycles.push_back(*lc);
  }
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

  // The runtime image (python's stdlib, node) lands up to five times: archive, store, the peers'
  // rootfs, and the --via-api daemon's upload and store. A tmpfs size is a limit, not an allocation.
  bool runtimes = std::any_of(functions.begin(), functions.end(), bench::needs_runtime_image);
  auto scratch = FNEXEC_TRY(bench::ScratchTmpfs::mount(o.scratch_parent, runtimes ? "4g" : "1g"));
  std::optional<image::Store> store;
  image::ResolvedImage img;
  auto archive = scratch.path() / "busybox-oci.tar";
  std::string archive_name = "bench:busybox";
  if (o.image) {
    store.emplace(FNEXEC_TRY(image::Store::open(g.root)));
    img = FNEXEC_TRY(store->resolve(*o.image));
    report.image = *o.image;
  } else if (runtimes) {
    auto mkimage = FNEXEC_TRY(bench::find_mkimage(o.mkimage));
    store.emplace(FNEXEC_TRY(image::Store::open(scratch.path() / "store")));
    bench::RuntimeImageParts parts;
    parts.python = std::find(functions.begin(), functions.end(), "python") != functions.end();
    parts.node = std::find(functions.begin(), functions.end(), "node") != functions.end();
    if (parts.node && !fs::find_in_path("node")) {
      report.skipped.push_back({"node", "not installed on the host (mkimage copies the host's node)"});
      std::erase(functions, "node");
      parts.node = false;
    }
    if (std::find(functions.begin(), functions.end(), "c") != functions.end()) {
      parts.c_echo = bench::find_c_echo();
      if (!parts.c_echo) {
        report.skipped.push_back({"c", "the example echo is not built (set FNEXEC_EXAMPLE_C to "
                                       "build/runtime/helpers/fnexec-example-c-echo)"});
        std::erase(functions, "c");
      }
    }
    archive = scratch.path() / "runtimes-oci.tar";
    archive_name = "bench:runtimes";
    img = FNEXEC_TRY(bench::build_runtime_image(*store, mkimage, scratch.path(), archive, parts));
    report.image =
        "busybox + the host's python3 and node + fnexec's runtime helpers and the bench handlers (built by "
        "rootfs-tools/mkimage into a scratch store on tmpfs)";
  } else {
    auto mkimage = FNEXEC_TRY(bench::find_mkimage(o.mkimage));
    store.emplace(FNEXEC_TRY(image::Store::open(scratch.path() / "store")));
    img = FNEXEC_TRY(bench::build_busybox_image(*store, mkimage, archive));
    report.image = "busybox (built by rootfs-tools/mkimage into a scratch store on tmpfs)";
  }

  // The runtime functions' expected result is what the same handler answers as a host process on
  // a copy of the image's rootfs (python's json.dumps and node's JSON.stringify differ).
  bool rootfs_copied = false;
  std::map<std::string, std::string> expected_output;
  if (!peer_names.empty() || runtimes) {
    FNEXEC_TRY(bench::copy_rootfs(img, scratch.path(), scratch.path() / "rootfs"));
    rootfs_copied = true;
  }
  for (auto it = functions.begin(); it != functions.end();) {
    if (!bench::speaks_frames(*it)) {
      expected_output[*it] = *it == "cat" ? event : std::string();
      ++it;
      continue;
    }
    auto host = FNEXEC_TRY(bench::host_command(*it, scratch.path() / "rootfs"));
    std::string out;
    if (auto r = bench::run_command({host.path, host.argv, -1}, event, out); !r) {
      report.skipped.push_back({*it, "its handler fails as a host process: " + r.error().message()});
      it = functions.erase(it);
      continue;
    }
    expected_output[*it] = std::move(out);
    ++it;
  }

  std::vector<bench::FnexecFunction> fnexec_functions, framed_functions;
  for (const auto& f : functions) {
    fnexec_functions.push_back({f, img, bench::function_argv(f), scratch.path() / "mnt", cgroups});
    if (bench::speaks_frames(f)) framed_functions.push_back(fnexec_functions.back());
  }
  std::string image_ref = img.reference.empty() ? img.manifest_digest : img.reference;

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
    ao.archive_name = archive_name;
    ao.cgroups = cgroups;
    ao.max_concurrency = max_conc;
    if (auto a = bench::ApiServer::start(ao))
      api = std::move(*a);
    else
      report.skipped.push_back({"fnexec cold-api, warm-api", a.error().message()});
  }

  std::vector<bench::Entry> entries;
  auto expected = [&](const std::string& f) { return expected_output[f]; };
  bench::RunPlan plan;
  plan.runs = o.runs;
  plan.warmup = o.warmup;
  plan.concurrency = report.concurrency;
  plan.event = event;
  // Sandboxes parked per warm pool: one above the highest concurrency, and for fresh, whose
  // sandboxes serve one event each, a whole batch (the pool refills between batches).
  auto parked_for = [&](pool::Lifecycle l) {
    unsigned n = max_conc + 1;
    return l == pool::Lifecycle::fresh ? std::max(n, bench::largest_batch(plan) + 1) : n;
  };
  std::shared_ptr<pool::PoolSet> warm_pools;
  // Memory of parked pre-initialized sandboxes, before any other pool parks one.
  auto measure_parked_memory = [&] {
    if (std::none_of(lifecycles.begin(), lifecycles.end(), [](auto l) { return l != pool::Lifecycle::oneshot; }))
      return;
    for (const auto& fn : framed_functions) {
      if (auto m = bench::measure_parked_memory(*warm_pools, image_ref, fn, 4))
        report.parked_memory.push_back(
            {m->function, m->sandboxes, m->processes, m->rss_kib, m->pss_kib, m->cgroup_kib});
      else
        report.skipped.push_back({"parked memory " + fn.name, m.error().message()});
    }
  };
  // The mode of a warm pool hit: warm (oneshot), fresh, reuse.
  auto warm_mode = [](pool::Lifecycle l) {
    return l == pool::Lifecycle::oneshot ? std::string("warm") : std::string(pool::to_string(l));
  };
  auto add_api_entries = [&](bool warm, pool::Lifecycle lifecycle) {
    if (!api) return;
    std::string mode = (warm ? warm_mode(lifecycle) : "cold") + "-api";
    for (const auto& fn : lifecycle == pool::Lifecycle::oneshot ? fnexec_functions : framed_functions) {
      auto t = api->add_function(fn.name, fn.argv, warm, lifecycle, parked_for(lifecycle));
      if (!t)
        report.skipped.push_back({"fnexec " + mode + " " + fn.name, t.error().message()});
      else
        entries.push_back({"fnexec", mode, fn.name, *t, expected(fn.name)});
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
        entries.push_back({"fnexec", "cold", fn.name, *t, expected(fn.name)});
      }
      add_api_entries(false, pool::Lifecycle::oneshot);
    } else if (m == "run") {
      // The whole `fnexec run` process, as a user at a shell gets it: exec, image resolve, sandbox.
      for (const auto& fn : fnexec_functions) {
        std::vector<std::string> argv{"fnexec", "--root", store->root().string(), "run", img.manifest_digest, "--"};
        argv.insert(argv.end(), fn.argv.begin(), fn.argv.end());
        bench::Command c{"/proc/self/exe", argv, -1};
        entries.push_back({"fnexec", "run", fn.name, bench::command_target({c}), expected(fn.name)});
      }
    } else {
      if (!warm_pools) {
        auto p = bench::make_pool_set(*store, cgroups);
        if (!p) {
          report.skipped.push_back({"fnexec warm", p.error().message()});
          continue;
        }
        warm_pools = *p;
        measure_parked_memory();
      }
      for (auto lifecycle : lifecycles) {
        std::string mode = warm_mode(lifecycle);
        const auto& fns = lifecycle == pool::Lifecycle::oneshot ? fnexec_functions : framed_functions;
        if (fns.empty()) {
          report.skipped.push_back({"fnexec " + mode, "no function speaks fnexec/1 (python, node, c do)"});
          continue;
        }
        auto ts = bench::make_warm_targets(warm_pools, image_ref, fns, parked_for(lifecycle), lifecycle);
        if (!ts)
          report.skipped.push_back({"fnexec " + mode, ts.error().message()});
        else
          for (size_t i = 0; i < ts->size(); ++i)
            entries.push_back({"fnexec", mode, fns[i].name, (*ts)[i], expected(fns[i].name)});
        add_api_entries(true, lifecycle);
      }
    }
  }

  if (!peer_names.empty()) {
    if (!rootfs_copied) FNEXEC_TRY(bench::copy_rootfs(img, scratch.path(), scratch.path() / "rootfs"));
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
  warm_pools.reset();
  api.reset();      // stops the bench's daemon and removes its functions, cgroups and directory
  bench::read_load(report.host.load_after);
  std::fputs(bench::to_table(report).c_str(), stdout);
  std::fflush(stdout);
  if (o.json) FNEXEC_TRY(fs::write_output_file(*o.json, bench::to_json(report)));
  if (o.markdown) FNEXEC_TRY(fs::write_output_file(*o.markdown, bench::to_markdown(report)));
  if (o.svg) FNEXEC_TRY(fs::write_output_file(*o.svg, bench::to_svg(report)));
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
  sub->add_option("--peers", o->peers,
                  "floor, pipe (python/node/c: a long-lived host process over fnexec/1), bwrap, crun, runc, or none")
      ->capture_default_str();
  sub->add_option("--function", o->functions,
                  "busybox true, cat (event in, same bytes out); python, node (JSON event in, the same JSON out), "
                  "c (bytes echoed), on fnexec's runtime helpers in an image built from the host's runtimes")
      ->capture_default_str();
  sub->add_option("--lifecycle", o->lifecycles,
                  "lifecycles of the warm pools: oneshot (mode warm), fresh, reuse (python, node, c only)")
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
