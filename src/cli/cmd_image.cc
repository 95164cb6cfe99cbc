// fnexec image import|ls|inspect|rm|gc: the content-addressed image store from the command line.
#include <simdjson.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <thread>
#include <vector>
#include <string>

#include "cgroup/cgroup.h"
#include "cli/commands.h"
#include "image/oci.h"
#include "image/remote.h"
#include "image/store.h"
#include "registry/pull.h"
#include "registry/reference.h"
#include "server/client.h"
#include "server/json.h"

namespace fnexec::cli {

namespace {

using image::json_quote;

std::string json_array(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + json_quote(v[i]);
  return out + "]";
}

std::string human_size(int64_t bytes) {
  char buf[32];
  if (bytes >= 1000 * 1000) std::snprintf(buf, sizeof buf, "%.1f MB", static_cast<double>(bytes) / 1e6);
  else if (bytes >= 1000) std::snprintf(buf, sizeof buf, "%.1f kB", static_cast<double>(bytes) / 1e3);
  else std::snprintf(buf, sizeof buf, "%lld B", static_cast<long long>(bytes));
  return buf;
}

struct ImageArgs {
  std::string source;
  std::string name;
  bool allow_devices = false;
  std::string max_layer_bytes, max_image_bytes;
  bool json = false;
  std::string ref;
  PullFlags pull;
  bool remote = false;
  EndpointOptions endpoint;
};

int do_remote_pull(const ImageArgs& a);

int do_pull(const Globals& g, const ImageArgs& a) {
  if (a.remote) return do_remote_pull(a);
  auto store = image::Store::open(g.root);
  if (!store) return report(store.error());
  auto request = a.pull.request(a.source);
  if (!a.name.empty()) request.name = a.name;
  auto img = registry::pull(*store, request);
  if (!img) return report(img.error());
  std::printf("%s %s\n", img->reference.c_str(), img->manifest_digest.c_str());
  return 0;
}

int do_import(const Globals& g, const ImageArgs& a) {
  if (registry::has_docker_transport(a.source)) return do_pull(g, a);
  auto store = image::Store::open(g.root);
  if (!store) return report(store.error());
  image::ImportOptions opts;
  if (!a.name.empty()) opts.name = a.name;
  opts.allow_devices = a.allow_devices;
  for (auto [text, limit] : {std::pair{&a.max_layer_bytes, &opts.max_layer_bytes},
                             std::pair{&a.max_image_bytes, &opts.max_image_bytes}}) {
    if (text->empty()) continue;
    auto bytes = cgroup::parse_size(*text);
    if (!bytes) return report(bytes.error());
    *limit = *bytes;
  }
  opts.progress = ::isatty(STDERR_FILENO) == 1;
  auto img = store->import(a.source, opts);
  if (!img) return report(img.error());
  std::printf("%s %s\n", img->reference.c_str(), img->manifest_digest.c_str());
  return 0;
}

int do_ls(const Globals& g, const ImageArgs& a) {
  auto store = image::Store::open(g.root);
  if (!store) return report(store.error());
  auto images = store->list();
  if (!images) return report(images.error());
  if (a.json) {
    std::string out = "[";
    for (size_t i = 0; i < images->size(); ++i) {
      const auto& s = (*images)[i];
      out += std::string(i ? "," : "") + "\n  {\"name\":" + json_quote(s.name) + ",\"tag\":" + json_quote(s.tag) +
             ",\"digest\":" + json_quote(s.digest) + ",\"size\":" + std::to_string(s.size) +
             ",\"created\":" + json_quote(s.created) + "}";
    }
    std::printf("%s\n]\n", out.c_str());
    return 0;
  }
  std::printf("%-30s %-12s %-19s %10s  %s\n", "NAME", "TAG", "DIGEST", "SIZE", "CREATED");
  for (const auto& s : *images)
    std::printf("%-30s %-12s %-19s %10s  %s\n", s.name.c_str(), s.tag.c_str(), s.digest.substr(0, 19).c_str(),
                human_size(s.size).c_str(), s.created.c_str());
  return 0;
}

int do_inspect(const Globals& g, const ImageArgs& a) {
  auto store = image::Store::open(g.root);
  if (!store) return report(store.error());
  auto d = store->inspect(a.ref);
  if (!d) return report(d.error());
  const auto& c = d->image.config;
  int64_t total = d->config_size;
  uint64_t devices_skipped = 0;
  std::string layers = "[";
  for (size_t i = 0; i < d->layers.size(); ++i) {
    const auto& l = d->layers[i];
    total += l.size;
    devices_skipped += l.device_nodes_skipped;
    layers += std::string(i ? "," : "") + "\n    {\"digest\":" + json_quote(l.digest) + ",\"diff_id\":" +
              json_quote(l.diff_id) + ",\"media_type\":" + json_quote(l.media_type) +
              ",\"size\":" + std::to_string(l.size) + ",\"path\":" + json_quote(l.path.string()) +
              ",\"device_nodes\":" + std::to_string(l.device_nodes) +
              ",\"device_nodes_skipped\":" + std::to_string(l.device_nodes_skipped) + "}";
  }
  layers += "\n  ]";
  std::printf(
      "{\n  \"reference\": %s,\n  \"names\": %s,\n  \"digest\": %s,\n  \"size\": %lld,\n"
      "  \"device_nodes_skipped\": %llu,\n"
      "  \"config\": {\"digest\": %s, \"size\": %lld, \"architecture\": %s, \"os\": %s, \"created\": %s,\n"
      "    \"entrypoint\": %s, \"cmd\": %s, \"env\": %s, \"working_dir\": %s, \"user\": %s},\n"
      "  \"layers\": %s\n}\n",
      json_quote(d->image.reference).c_str(), json_array(d->names).c_str(),
      json_quote(d->image.manifest_digest).c_str(), static_cast<long long>(total),
      static_cast<unsigned long long>(devices_skipped),
      json_quote(d->config_digest).c_str(), static_cast<long long>(d->config_size),
      json_quote(c.architecture).c_str(), json_quote(c.os).c_str(), json_quote(c.created).c_str(),
      json_array(c.entrypoint).c_str(), json_array(c.cmd).c_str(), json_array(c.env).c_str(),
      json_quote(c.working_dir).c_str(), json_quote(c.user).c_str(), layers.c_str());
  return 0;
}

int do_rm(const Globals& g, const ImageArgs& a) {
  auto store = image::Store::open(g.root);
  if (!store) return report(store.error());
  auto removed = store->remove(a.ref);
  if (!removed) return report(removed.error());
  for (const auto& r : *removed) std::printf("untagged %s\n", r.c_str());
  return 0;
}

int do_gc(const Globals& g, const ImageArgs& a) {
  auto store = image::Store::open(g.root);
  if (!store) return report(store.error());
  auto r = store->gc();
  if (!r) return report(r.error());
  if (a.json)
    std::printf("{\"blobs_removed\":%zu,\"layers_removed\":%zu,\"bytes_freed\":%llu}\n", r->blobs_removed,
                r->layers_removed, static_cast<unsigned long long>(r->bytes_freed));
  else
    std::printf("removed %zu blobs and %zu layers, freed %s\n", r->blobs_removed, r->layers_removed,
                human_size(static_cast<int64_t>(r->bytes_freed)).c_str());
  return 0;
}

}  // namespace

namespace {

// podman's per-layer lines: redrawn in place on a TTY, one line per finished layer otherwise.
class PullDisplay {
 public:
  explicit PullDisplay(bool tty) : tty_(tty) {}

  void update(const image::PullProgress& p) {
    if (rows_.size() < p.layers) {
      rows_.resize(p.layers);
      first_byte_.resize(p.layers);
    }
    rows_[p.layer] = p;
    // Each layer's rate counts from its own first byte: layers wait for a fetch slot.
    if (p.state == image::PullProgress::fetching && first_byte_[p.layer] == std::chrono::steady_clock::time_point{})
      first_byte_[p.layer] = std::chrono::steady_clock::now();
    if (!tty_) {
      if (p.state == image::PullProgress::reused) std::fprintf(stderr, "Copying blob %s skipped: already in the store\n", short_digest(p).c_str());
      else if (p.state == image::PullProgress::done_ok) std::fprintf(stderr, "Copying blob %s done\n", short_digest(p).c_str());
      return;
    }
    auto now = std::chrono::steady_clock::now();
    bool final = p.state == image::PullProgress::done_ok || p.state == image::PullProgress::failed ||
                 p.state == image::PullProgress::reused;
    if (!final && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    if (drawn_) std::fprintf(stderr, "\033[%zuA", drawn_);
    for (size_t i = 0; i < rows_.size(); ++i) {
      const auto& r = rows_[i];
      double secs = std::chrono::duration<double>(now - first_byte_[i]).count();
      std::string what = r.state == image::PullProgress::reused    ? "skipped: already in the store"
                         : r.state == image::PullProgress::done_ok ? "done"
                         : r.state == image::PullProgress::failed  ? "failed"
                         : r.state == image::PullProgress::waiting ? "waiting"
                                                                   : "";
      if (what.empty()) {
        char buf[96];
        std::snprintf(buf, sizeof buf, "%s / %s  %.1f MB/s", human_size(static_cast<int64_t>(r.done)).c_str(),
                      human_size(static_cast<int64_t>(r.total)).c_str(),
                      secs > 0 ? static_cast<double>(r.done) / 1e6 / secs : 0.0);
        what = buf;
      }
      std::fprintf(stderr, "\033[2KCopying blob %s %s\n", short_digest(r).c_str(), what.c_str());
    }
    drawn_ = rows_.size();
    std::fflush(stderr);
  }

 private:
  static std::string short_digest(const image::PullProgress& p) {
    return p.digest.size() > 19 ? p.digest.substr(7, 12) : p.digest;
  }
  bool tty_;
  std::vector<image::PullProgress> rows_;
  size_t drawn_ = 0;
  std::vector<std::chrono::steady_clock::time_point> first_byte_;
  std::chrono::steady_clock::time_point last_{};
};

// `image pull --remote`: the daemon pulls (POST /v1/images/pull) into its store; this process
// polls GET /v1/images/pulls/{id} and draws the same display as a local pull.
int do_remote_pull(const ImageArgs& a) {
  const auto& f = a.pull;
  if (!f.creds.empty() || !f.auth_file.empty() || !f.cert_dir.empty())
    return report(fail(ErrorKind::invalid, "pull through the daemon", a.source,
                       "--creds, --authfile and --cert-dir are the daemon's own with --remote: set registry_auth_file "
                       "and registry_certs_dir in its fnexec.conf").error());
  auto client = connect(a.endpoint);
  if (!client) return report(client.error());
  server::JsonWriter w;
  w.begin_object().field("reference", a.source);
  if (!a.name.empty()) w.field("name", a.name);
  if (!f.platform.empty()) w.field("platform", f.platform);
  w.field("tls_verify", f.tls_verify).end_object();
  auto started = client->request("POST", "/v1/images/pull", w.take());
  if (!started) return report(started.error());
  if (started->status != 202) return report(http_error(*started, "pull " + a.source + " through the daemon"));
  simdjson::dom::parser parser;
  std::string_view id;
  if (parser.parse(simdjson::padded_string(started->body))["id"].get_string().get(id))
    return report(fail(ErrorKind::protocol, "read the daemon's pull reply", a.source, started->body).error());
  const std::string path = "/v1/images/pulls/" + std::string(id);
  std::unique_ptr<PullDisplay> display;
  if (!f.quiet) display = std::make_unique<PullDisplay>(::isatty(STDERR_FILENO) == 1);
  std::vector<image::PullProgress> shown;
  for (;;) {
    auto r = client->request("GET", path);
    if (!r) return report(r.error());
    if (r->status != 200) return report(http_error(*r, "follow pull " + path));
    simdjson::dom::element doc;
    std::string_view state, text;
    if (parser.parse(simdjson::padded_string(r->body)).get(doc) || doc["state"].get_string().get(state))
      return report(fail(ErrorKind::protocol, "read the daemon's pull status", path, r->body).error());
    simdjson::dom::array layers;
    if (display && !doc["layers"].get_array().get(layers)) {
      size_t n = layers.size(), i = 0;
      shown.resize(n);
      for (auto l : layers) {
        image::PullProgress p;
        p.layer = i;
        p.layers = n;
        if (server::read_member(l["digest"], text)) p.digest = text;
        server::read_member(l["done"], p.done);
        server::read_member(l["total"], p.total);
        text = {};
        server::read_member(l["state"], text);
        p.state = text == "reused"     ? image::PullProgress::reused
                  : text == "fetching" ? image::PullProgress::fetching
                  : text == "done"     ? image::PullProgress::done_ok
                  : text == "failed"   ? image::PullProgress::failed
                                       : image::PullProgress::waiting;
        // Only changes are drawn: without a TTY each finished layer is one line, once.
        if (p.state != shown[i].state || p.done != shown[i].done || p.digest != shown[i].digest) display->update(p);
        shown[i++] = p;
      }
    }
    if (state == "done") {
      std::string_view image, digest;
      server::read_member(doc["image"], image);
      server::read_member(doc["digest"], digest);
      std::printf("%.*s %.*s\n", static_cast<int>(image.size()), image.data(), static_cast<int>(digest.size()), digest.data());
      return 0;
    }
    if (state == "failed") {
      std::string_view message;
      server::read_member(doc["error"], message);
      return report(Error{ErrorKind::unavailable, 0, "pull " + a.source + " through the daemon", {}, std::string(message)});
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

}  // namespace

void PullFlags::add_to(CLI::App* sub) {
  sub->add_option("--creds", creds, "USER:PASS for the registry (default: auth.json, ~/.docker/config.json)");
  sub->add_option("--authfile", auth_file, "read credentials from this auth.json instead of the default places");
  sub->add_option("--cert-dir", cert_dir, "CA (*.crt) and client certificate directory (default /etc/containers/certs.d/HOST:PORT)");
  sub->add_option("--tls-verify", tls_verify, "verify the registry's TLS certificate (false: also allows plain HTTP)")
      ->default_str("true");
  sub->add_option("--platform", platform, "OS/ARCH[/VARIANT] to choose from a multi-platform image (default: this host)");
  sub->add_flag("-q,--quiet", quiet, "no progress output");
}

registry::PullRequest PullFlags::request(const std::string& reference) const {
  registry::PullRequest r;
  r.reference = reference;
  r.creds = creds;
  r.auth_file = auth_file;
  r.cert_dir = cert_dir;
  r.tls_verify = tls_verify;
  r.platform = platform;
  if (!quiet) {
    auto display = std::make_shared<PullDisplay>(::isatty(STDERR_FILENO) == 1);
    r.progress = [display](const image::PullProgress& p) { display->update(p); };
  }
  return r;
}

void add_image_commands(CLI::App& app, Globals& g) {
  auto args = std::make_shared<ImageArgs>();
  auto* image = app.add_subcommand("image", "manage the image store (import, ls, inspect, rm, gc)");
  image->require_subcommand(1);

  auto* pull = image->add_subcommand("pull", "pull an image from a registry (the OCI distribution API)");
  pull->add_option("reference", args->source,
                   "[docker://]REGISTRY/REPO[:TAG|@sha256:DIGEST]; a name without a registry means docker.io")
      ->required();
  pull->add_option("--name", args->name, "record the image as NAME[:TAG] (default: REGISTRY/REPO:TAG)");
  args->pull.add_to(pull);
  pull->add_flag("--remote", args->remote,
                 "let the daemon pull into its store (POST /v1/images/pull) with its credentials and CAs; "
                 "progress is followed here");
  add_endpoint_options(pull, args->endpoint);
  pull->callback([&g, args] { g.exit_code = do_pull(g, *args); });

  auto* imp = image->add_subcommand("import", "import an OCI layout, oci-archive or docker-archive, or pull docker://");
  imp->add_option("source", args->source,
                  "oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF], docker://REF or a plain path")
      ->required();
  args->pull.add_to(imp);
  imp->add_option("--name", args->name, "record the image as NAME[:TAG] (default: from the source)");
  imp->add_flag("--allow-devices", args->allow_devices, "keep block/char device nodes found in layers (skipped by default; image layers are mounted nodev)");
  imp->add_option("--max-layer-bytes", args->max_layer_bytes,
                  "refuse a layer that unpacks to more than SIZE (e.g. 2g; 0: no limit; default 10g)");
  imp->add_option("--max-image-bytes", args->max_image_bytes,
                  "refuse an image whose layers unpack to more than SIZE in all (default 10g)");
  imp->callback([&g, args] { g.exit_code = do_import(g, *args); });

  auto* ls = image->add_subcommand("ls", "list images: name, tag, digest, size, created");
  ls->add_flag("--json", args->json, "print a JSON array");
  ls->callback([&g, args] { g.exit_code = do_ls(g, *args); });

  auto* inspect = image->add_subcommand("inspect", "print an image's config and layers as JSON");
  inspect->add_option("ref", args->ref, "NAME[:TAG], sha256:DIGEST or a unique digest prefix")->required();
  inspect->callback([&g, args] { g.exit_code = do_inspect(g, *args); });

  auto* rm = image->add_subcommand("rm", "remove a name (or every name of a digest); gc frees the space");
  rm->add_option("ref", args->ref, "NAME[:TAG], sha256:DIGEST or a unique digest prefix")->required();
  rm->callback([&g, args] { g.exit_code = do_rm(g, *args); });

  auto* gc = image->add_subcommand("gc", "remove blobs and layers no image name needs");
  gc->add_flag("--json", args->json, "print the report as JSON");
  gc->callback([&g, args] { g.exit_code = do_gc(g, *args); });
}

}  // namespace fnexec::cli
