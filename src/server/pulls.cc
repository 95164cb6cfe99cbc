#include "server/pulls.h"

#include <simdjson.h>
#include <spdlog/spdlog.h>

#include "registry/reference.h"
#include "server/json.h"
#include "server/service.h"

namespace fnexec::server {

namespace {

const char* state_name(image::PullProgress::State s) {
  switch (s) {
    case image::PullProgress::waiting: return "waiting";
    case image::PullProgress::reused: return "reused";
    case image::PullProgress::fetching: return "fetching";
    case image::PullProgress::done_ok: return "done";
    case image::PullProgress::failed: return "failed";
  }
  return "unknown";
}

}  // namespace

Result<registry::PullRequest> parse_pull_request(std::string_view json) {
  auto bad = [](std::string detail) {
    return fail(ErrorKind::invalid, "parse pull request", {},
                detail + R"(; want {"reference":"REGISTRY/REPO:TAG","name":"...","platform":"linux/amd64","tls_verify":true})");
  };
  simdjson::dom::parser parser;
  simdjson::padded_string padded(json);
  simdjson::dom::object obj;
  if (auto err = parser.parse(padded).get(obj)) return bad(std::string("not a JSON object: ") + simdjson::error_message(err));
  registry::PullRequest r;
  for (auto kv : obj) {
    std::string_view k = kv.key, text;
    bool flag = false;
    if (k == "tls_verify") {
      if (kv.value.get_bool().get(flag)) return bad("tls_verify must be true or false");
      r.tls_verify = flag;
      continue;
    }
    if (kv.value.get_string().get(text)) return bad("'" + std::string(k) + "' must be a string");
    if (k == "reference") r.reference = text;
    else if (k == "name") r.name = std::string(text);
    else if (k == "platform") r.platform = text;
    else return bad("unknown field '" + std::string(k) + "'");
  }
  if (r.reference.empty()) return bad("'reference' is missing");
  FNEXEC_TRY(registry::parse_reference(r.reference));
  if (!r.platform.empty()) FNEXEC_TRY(registry::parse_platform(r.platform));
  return r;
}

namespace {

const char* const kJobStates[] = {"queued", "running", "done", "failed"};

std::string layers_json(const std::vector<image::PullProgress>& layers) {
  JsonWriter w;
  w.begin_array();
  for (const auto& l : layers) {
    w.begin_object().field("digest", l.digest).field("state", state_name(l.state));
    w.field("done", l.done).field("total", l.total).end_object();
  }
  w.end_array();
  return w.take();
}

// GET /v1/images/pulls/{id}'s body.
std::string status_json_of(const PullRecord& p, std::optional<uint64_t> joined) {
  uint64_t done = 0, total = 0;
  simdjson::dom::parser parser;
  simdjson::padded_string padded(p.layers_json);
  simdjson::dom::array layers;
  if (!parser.parse(padded).get_array().get(layers))
    for (auto l : layers) {
      uint64_t d = 0, t = 0;
      if (!l["done"].get_uint64().get(d)) done += d;
      if (!l["total"].get_uint64().get(t)) total += t;
    }
  JsonWriter w;
  w.begin_object().field("id", p.id).field("reference", p.reference).field("state", p.state);
  if (joined) w.field("joined", *joined);
  w.field("started_ms", p.started_ms);
  if (p.finished_ms) w.field("finished_ms", *p.finished_ms);
  if (!p.image.empty()) w.field("image", p.image).field("digest", p.digest);
  if (!p.error.empty()) w.field("error", p.error);
  if (p.error.starts_with("interrupted")) w.field("interrupted", true);
  w.key("layers").raw(p.layers_json).field("bytes_done", done).field("bytes_total", total).end_object();
  return w.take();
}

}  // namespace

PullRecord Pulls::record_of(const Job& job) {
  PullRecord p;
  p.id = job.id;
  p.reference = job.reference;
  p.state = kJobStates[static_cast<int>(job.state)];
  p.started_ms = job.started_ms;
  if (job.finished_ms) p.finished_ms = job.finished_ms;
  if (job.result && *job.result) {
    p.image = (*job.result)->reference;
    p.digest = (*job.result)->manifest_digest;
  }
  if (job.result && !*job.result) p.error = job.result->error().message();
  p.layers_json = layers_json(job.layers);
  return p;
}

void Pulls::persist(const Job& job) {
  if (!state_) return;
  // A record that cannot be written costs only its survival of a restart: the pull goes on.
  if (auto r = state_->put_pull(record_of(job), keep_finished_); !r)
    spdlog::warn("pull id={}: not recorded: {}", job.id, r.error().message());
}

Result<Pulls::Ticket> Pulls::submit(registry::PullRequest request) {
  auto ref = FNEXEC_TRY(registry::parse_reference(request.reference));
  std::string key = ref.str() + "\n" + request.platform + "\n" + request.name.value_or("") + "\n" +
                    (request.tls_verify ? "verify" : "insecure");
  std::lock_guard lock(mu_);
  if (auto it = active_.find(key); it != active_.end()) {
    ++jobs_.at(it->second)->joined;
    return Ticket{it->second, true};
  }
  auto job = std::make_shared<Job>();
  job->id = new_invocation_id();
  job->key = key;
  job->reference = ref.str();
  job->request = std::move(request);
  job->started_ms = now_ms();
  active_[key] = job->id;
  jobs_[job->id] = job;
  persist(*job);
  return Ticket{job->id, false};
}

Result<image::ResolvedImage> Pulls::run(const std::string& id, bool wait) {
  std::shared_ptr<Job> job;
  {
    std::unique_lock lock(mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return fail(ErrorKind::not_found, "run pull", id, "no such pull");
    job = it->second;
    if (job->state != State::queued) {
      if (!wait) return fail(ErrorKind::exists, "run pull", id, "another request runs it");
      finished_.wait(lock, [&] { return job->result.has_value(); });
      return *job->result;
    }
    job->state = State::running;
    persist(*job);
  }
  registry::PullRequest request = job->request;
  request.progress = [this, job](const image::PullProgress& p) {
    std::lock_guard lock(mu_);
    if (job->layers.size() < p.layers) job->layers.resize(p.layers);
    if (p.layer < job->layers.size()) job->layers[p.layer] = p;
  };
  auto result = registry::pull(store_, request);
  if (result) spdlog::info("pull id={} {} digest={}", id, job->reference, result->manifest_digest);
  else spdlog::warn("pull id={} {} failed: {}", id, job->reference, result.error().message());
  {
    std::lock_guard lock(mu_);
    job->state = result ? State::done : State::failed;
    job->finished_ms = now_ms();
    job->result = result;
    persist(*job);
    active_.erase(job->key);
    finished_ids_.push_back(job->id);
    while (finished_ids_.size() > keep_finished_) {
      jobs_.erase(finished_ids_.front());
      finished_ids_.pop_front();
    }
  }
  finished_.notify_all();
  return result;
}

std::optional<std::string> Pulls::status_json(const std::string& id) const {
  {
    std::lock_guard lock(mu_);
    if (auto it = jobs_.find(id); it != jobs_.end())
      return status_json_of(record_of(*it->second), static_cast<uint64_t>(it->second->joined));
  }
  if (!state_) return std::nullopt;
  auto stored = state_->get_pull(id);
  if (!stored) {
    spdlog::warn("pull id={}: cannot read its record: {}", id, stored.error().message());
    return std::nullopt;
  }
  if (!*stored) return std::nullopt;
  return status_json_of(**stored, std::nullopt);
}

}  // namespace fnexec::server
