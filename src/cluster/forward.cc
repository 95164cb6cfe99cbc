#include "cluster/forward.h"

#include <fmt/format.h>

#include <charconv>

#include "cluster/async_queue.h"
#include "cluster/event_context.h"
#include "util/log.h"

namespace fnexec::cluster {

namespace {

using Clock = std::chrono::steady_clock;

// The one queue group every node joins per function: NATS hands each request to one member.
constexpr const char* kQueueGroup = "fnexec-sync";
// Room left in a message for its headers when the body is cut to NATS's max_payload.
constexpr int64_t kHeaderRoom = 1024;
// A request nobody answered (not even "busy") this long: the node it went to is gone.
constexpr std::chrono::milliseconds kAnswerWait{2000};
// Beyond the function's timeout: the answering node's record write and reply.
constexpr std::chrono::milliseconds kRunMargin{5000};
constexpr std::chrono::milliseconds kAliveInterval{1000};
constexpr std::chrono::milliseconds kTick{50};
// The asking node is in the queue group too (busy, which is why it forwards): after its own refusal
// the request goes to the group again at once, where another node is as likely to get it; only this
// many times, so a cluster where this node alone serves the function does not spin until the deadline.
constexpr int kOwnRefusalResends = 8;

// The kinds of message on a caller's reply subject (header Fnexec-Forward).
constexpr const char* kBusy = "busy";        // refused, not run; body: why
constexpr const char* kRunning = "running";  // admitted: it runs now (header Fnexec-Node)
constexpr const char* kAlive = "alive";      // still running
constexpr const char* kResult = "result";    // first part of the run (header Fnexec-Parts)
constexpr const char* kPart = "part";        // the next part

std::string sync_subject(const std::string& function) {
  return "fnexec.sync." + subject_token(function);
}

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int64_t to_int(const std::string& text) {
  int64_t v = 0;
  std::from_chars(text.data(), text.data() + text.size(), v);
  return v;
}

// One message with the Fnexec-Forward kind and the given headers (and a caller's context); false
// when NATS refused it.
bool publish(Connection& conn, const std::string& subject, const char* kind, std::string_view body,
             std::initializer_list<std::pair<const char*, std::string>> headers = {}, const char* reply = nullptr,
             const invoke::EventContext* context = nullptr) {
  natsMsg* msg = nullptr;
  if (natslib().natsMsg_Create(&msg, subject.c_str(), reply, body.data(), static_cast<int>(body.size())) != NATS_OK) return false;
  natslib().natsMsgHeader_Set(msg, "Fnexec-Forward", kind);
  for (const auto& [k, v] : headers) natslib().natsMsgHeader_Set(msg, k, v.c_str());
  if (context) set_context_headers(msg, *context);
  natsStatus s = natslib().natsConnection_PublishMsg(conn.nats(), msg);
  natslib().natsMsg_Destroy(msg);
  return s == NATS_OK;
}

int64_t part_size(Connection& conn) {
  int64_t max = natslib().natsConnection_GetMaxPayload(conn.nats());
  return max > 2 * kHeaderRoom ? max - kHeaderRoom : (1 << 20) - kHeaderRoom;
}

}  // namespace

struct SyncForwarder::Call {
  enum class State { asked, refused, running };
  uint64_t id = 0;
  std::string function;
  std::string event;
  invoke::EventContext context;
  std::chrono::milliseconds timeout{0};
  std::function<void(Result<ForwardReply>)> done;
  State state = State::asked;
  Clock::time_point asked_at, retry_at, heard_at, run_deadline, find_deadline;
  int64_t admit_by_ms = 0;  // the caller's deadline for a node to admit it, as every node reads it
  int attempts = 0;
  int own_refusals = 0;  // busy answers from this node itself
  std::string refusal;  // the last node's reason
  std::string node;     // the node running it
  int64_t parts = 0;    // of the result, once the first came
  int64_t received = 0;
  std::string run;
};

// A subscription of the forwarder: a function's queue group (on_request), or the replies to this
// node's calls (on_reply, function ""). nats.c calls back with it until the completion callback.
struct SyncForwarder::Group {
  SyncForwarder* self = nullptr;
  std::string function;
  natsSubscription* sub = nullptr;
  std::mutex mu;
  std::condition_variable cv;
  bool complete = false;
  static void on_complete(void* closure) {
    auto* g = static_cast<Group*>(closure);
    std::lock_guard lock(g->mu);
    g->complete = true;
    g->cv.notify_all();
  }
  // Leaves the group and waits until nats.c delivers nothing more to this object.
  ~Group() {
    if (!sub) return;
    if (natslib().natsSubscription_Unsubscribe(sub) == NATS_OK) {
      std::unique_lock lock(mu);
      cv.wait_for(lock, std::chrono::seconds(5), [this] { return complete; });
    }
    natslib().natsSubscription_Destroy(sub);
  }
};

SyncForwarder::SyncForwarder(Connection& conn, Local& local, AsyncQueue& queue, std::string node)
    : conn_(conn), local_(local), queue_(queue), node_(std::move(node)) {}

Result<std::unique_ptr<SyncForwarder>> SyncForwarder::open(Connection& conn, Local& local, AsyncQueue& queue,
                                                           std::string node) {
  std::unique_ptr<SyncForwarder> f(new SyncForwarder(conn, local, queue, std::move(node)));
  natsInbox* inbox = nullptr;
  if (auto s = natslib().natsInbox_Create(&inbox); s != NATS_OK) return nats_fail(s, "create the forwarding inbox");
  f->inbox_ = inbox;
  natslib().natsInbox_Destroy(inbox);
  auto wildcard = f->inbox_ + ".*";
  f->replies_ = std::make_unique<Group>();
  f->replies_->self = f.get();
  if (auto s = natslib().natsConnection_Subscribe(&f->replies_->sub, conn.nats(), wildcard.c_str(), on_reply, f->replies_.get());
      s != NATS_OK)
    return nats_fail(s, "subscribe to forwarded replies", wildcard);
  natslib().natsSubscription_SetOnCompleteCB(f->replies_->sub, Group::on_complete, f->replies_.get());
  f->ticker_ = std::jthread([p = f.get()](std::stop_token st) { p->tick(st); });
  return f;
}

SyncForwarder::~SyncForwarder() {
  ticker_.request_stop();
  wake_.notify_all();
  if (ticker_.joinable()) ticker_.join();
  std::map<std::string, std::unique_ptr<Group>> groups;
  {
    std::lock_guard lock(mu_);
    groups.swap(groups_);
  }
  groups.clear();
  replies_.reset();  // waits until no reply callback runs
  std::map<uint64_t, std::unique_ptr<Call>> calls;
  {
    std::lock_guard lock(mu_);
    calls.swap(calls_);
  }
  for (auto& [_, c] : calls)
    c->done(fail(ErrorKind::unavailable, "forward invocation of function " + c->function, {},
                 "the daemon is stopping"));
}

void SyncForwarder::follow(const std::string& function) {
  bool serves = local_.function_spec(function).has_value();
  std::unique_ptr<Group> leaving;
  {
    std::lock_guard lock(mu_);
    auto it = groups_.find(function);
    if (serves == (it != groups_.end())) return;
    if (!serves) {
      leaving = std::move(it->second);
      groups_.erase(it);
    }
  }
  if (leaving) return;  // ~Group leaves the queue group outside mu_: its callback may be waiting for mu_
  auto g = std::make_unique<Group>();
  g->self = this;
  g->function = function;
  auto subject = sync_subject(function);
  if (auto s = natslib().natsConnection_QueueSubscribe(&g->sub, conn_.nats(), subject.c_str(), kQueueGroup, on_request, g.get());
      s != NATS_OK) {
    spdlog::error("cluster: function={} sync forwarding not joined: {}", function,
                  nats_fail(s, "subscribe", subject).error().message());
    return;
  }
  natslib().natsSubscription_SetOnCompleteCB(g->sub, Group::on_complete, g.get());
  std::lock_guard lock(mu_);
  groups_.emplace(function, std::move(g));
}

void SyncForwarder::on_request(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  auto* g = static_cast<Group*>(closure);
  g->self->serve(g->function, msg);
  natslib().natsMsg_Destroy(msg);
}

void SyncForwarder::serve(const std::string& function, natsMsg* msg) {
  const char* reply = natslib().natsMsg_GetReply(msg);
  if (!reply || !*reply) return;
  std::string reply_to = reply;
  auto origin = msg_header(msg, "Fnexec-Origin");
  // The caller stopped looking for a node: running it now would answer no one.
  if (wall_ms() > to_int(msg_header(msg, "Fnexec-Admit-By-Ms"))) {
    publish(conn_, reply_to, kBusy, fmt::format("node {} got it after the caller's wait", node_));
    return;
  }
  // Admitted or refused here, never passed on: a forwarded request cannot loop.
  if (auto refused = local_.admit_forwarded(function)) {
    publish(conn_, reply_to, kBusy, fmt::format("node {}: {}", node_, *refused), {{"Fnexec-Node", node_}});
    return;
  }
  uint64_t served_id = 0;
  {
    std::lock_guard lock(mu_);
    served_id = next_id_++;
    served_.emplace(served_id, reply_to);
  }
  // "running" goes before the run starts, so the caller hears it before any part of the result.
  publish(conn_, reply_to, kRunning, {}, {{"Fnexec-Node", node_}});
  spdlog::debug("cluster: function={} sync invocation forwarded by {} runs here", function, origin);
  std::string event;
  if (auto* data = natslib().natsMsg_GetData(msg)) event.assign(data, static_cast<size_t>(natslib().natsMsg_GetDataLength(msg)));
  local_.run_forwarded(function, std::move(event), context_from_headers(msg),
                       [this, served_id, reply_to, function](std::string run, const std::string& id,
                                                             const std::function<std::string()>& record) {
    answer_parts(reply_to, function, run);
    {
      std::lock_guard lock(mu_);
      served_.erase(served_id);
    }
    // After the reply, so the caller does not wait for it; the put's ack comes to this node.
    if (!id.empty()) queue_.store_record(id, record());
  });
}

void SyncForwarder::answer_parts(const std::string& reply_to, const std::string& function, const std::string& run) {
  // The run with the function's output may pass NATS's max_payload (1 MiB by default): in parts,
  // which one publisher's messages keep in order.
  auto size = static_cast<size_t>(part_size(conn_));
  size_t parts = std::max<size_t>(1, (run.size() + size - 1) / size);
  bool ok = true;
  for (size_t i = 0; i < parts && ok; ++i) {
    std::string_view part = std::string_view(run).substr(i * size, size);
    ok = i == 0 ? publish(conn_, reply_to, kResult, part, {{"Fnexec-Parts", std::to_string(parts)}, {"Fnexec-Node", node_}})
                : publish(conn_, reply_to, kPart, part);
  }
  if (!ok)
    spdlog::warn("cluster: function={} the result of a forwarded invocation could not be sent back (NATS down?)",
                 function);
}

void SyncForwarder::forward(const std::string& function, std::string event, invoke::EventContext context,
                            std::chrono::milliseconds timeout, std::function<void(Result<ForwardReply>)> done) {
  const std::string what = "forward invocation of function " + function;
  if (!conn_.connected())
    return done(fail(ErrorKind::unavailable, what, {}, "the NATS connection is down"));
  // The context's headers (up to 4 KiB) come on top of the room kept for the others.
  if (static_cast<int64_t>(event.size() + context_header_bytes(context)) > part_size(conn_))
    return done(fail(ErrorKind::too_large, what, {},
                     fmt::format("the event ({} bytes, {} more of caller context) is over NATS's max_payload ({} "
                                 "bytes); raise max_payload in nats-server's configuration to forward events this large",
                                 event.size(), context_header_bytes(context),
                                 natslib().natsConnection_GetMaxPayload(conn_.nats()))));
  auto c = std::make_unique<Call>();
  c->function = function;
  c->event = std::move(event);
  c->context = std::move(context);
  c->timeout = timeout;
  c->done = std::move(done);
  c->find_deadline = Clock::now() + kForwardWait;
  c->admit_by_ms = wall_ms() + kForwardWait.count();
  std::unique_lock lock(mu_);
  c->id = next_id_++;
  auto& call = *c;
  calls_.emplace(c->id, std::move(c));
  if (auto sent = send(call); !sent) {
    auto failed = std::move(calls_.at(call.id));
    calls_.erase(failed->id);
    lock.unlock();
    failed->done(std::unexpected(sent.error()));
  }
}

Result<> SyncForwarder::send(Call& c) {
  auto reply = inbox_ + "." + std::to_string(c.id);
  c.state = Call::State::asked;
  c.asked_at = Clock::now();
  ++c.attempts;
  if (!publish(conn_, sync_subject(c.function), "request", c.event,
               {{"Fnexec-Origin", node_}, {"Fnexec-Admit-By-Ms", std::to_string(c.admit_by_ms)},
                {"Fnexec-Timeout-Ms", std::to_string(c.timeout.count())}},
               reply.c_str(), &c.context))
    return fail(ErrorKind::unavailable, "forward invocation of function " + c.function, {},
                "NATS refused the request (the connection is down?)");
  return {};
}

void SyncForwarder::on_reply(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
  static_cast<Group*>(closure)->self->answer(msg);
  natslib().natsMsg_Destroy(msg);
}

void SyncForwarder::answer(natsMsg* msg) {
  std::string subject = natslib().natsMsg_GetSubject(msg);
  uint64_t id = static_cast<uint64_t>(to_int(subject.substr(subject.rfind('.') + 1)));
  auto kind = msg_header(msg, "Fnexec-Forward");
  std::string_view body;
  if (auto* data = natslib().natsMsg_GetData(msg)) body = {data, static_cast<size_t>(natslib().natsMsg_GetDataLength(msg))};
  std::unique_ptr<Call> finished;
  {
    std::lock_guard lock(mu_);
    auto it = calls_.find(id);
    if (it == calls_.end()) return;  // an "alive" after the result, or a call that gave up
    auto& c = *it->second;
    auto now = Clock::now();
    if (natslib().natsMsg_IsNoResponders(msg) || kind == kBusy) {
      if (c.state != Call::State::asked) return;
      c.state = Call::State::refused;
      c.refusal = natslib().natsMsg_IsNoResponders(msg) ? "no node serves it" : std::string(body);
      // 10, 20, 40 ... 200 ms: a node frees a slot in about a function's run time.
      c.retry_at = now + std::min<std::chrono::milliseconds>(std::chrono::milliseconds(10 << std::min(c.attempts, 5)),
                                                             std::chrono::milliseconds(200));
      if (kind == kBusy && msg_header(msg, "Fnexec-Node") == node_ && c.own_refusals++ < kOwnRefusalResends &&
          now < c.find_deadline)
        if (auto sent = send(c); !sent) c.state = Call::State::refused;  // the ticker tries again and ends it

    } else if (kind == kRunning) {
      c.state = Call::State::running;
      c.node = msg_header(msg, "Fnexec-Node");
      c.heard_at = now;
      c.run_deadline = now + c.timeout + kRunMargin;
    } else if (kind == kAlive) {
      c.heard_at = now;
    } else if (kind == kResult || kind == kPart) {
      c.heard_at = now;
      if (kind == kResult) {
        c.parts = to_int(msg_header(msg, "Fnexec-Parts"));
        c.node = msg_header(msg, "Fnexec-Node");
        c.run.clear();
        c.received = 0;
      }
      c.run.append(body);
      if (++c.received >= c.parts) {
        finished = std::move(it->second);
        calls_.erase(it);
      }
    }
  }
  wake_.notify_all();
  if (finished) finished->done(ForwardReply{finished->node, std::move(finished->run)});
}

void SyncForwarder::tick(std::stop_token stop) {
  auto next_alive = Clock::now() + kAliveInterval;
  std::mutex wait_mu;
  while (!stop.stop_requested()) {
    {
      std::unique_lock lock(wait_mu);
      wake_.wait_for(lock, stop, kTick, [] { return false; });
    }
    auto now = Clock::now();
    std::vector<std::pair<std::unique_ptr<Call>, Error>> failed;
    {
      std::lock_guard lock(mu_);
      if (now >= next_alive) {
        for (const auto& [_, reply_to] : served_) publish(conn_, reply_to, kAlive, {});
        next_alive = now + kAliveInterval;
      }
      for (auto it = calls_.begin(); it != calls_.end();) {
        auto& c = *it->second;
        const std::string what = "forward invocation of function " + c.function;
        std::optional<Error> error;
        if (c.state == Call::State::asked && now - c.asked_at > kAnswerWait) {
          error = Error{ErrorKind::protocol, 0, what, {},
                        fmt::format("no node answered within {} ms (the node it went to died or lost NATS); it did "
                                    "not start or its record is on that node",
                                    kAnswerWait.count())};
        } else if (c.state == Call::State::refused && now >= c.retry_at) {
          if (now >= c.find_deadline) {
            error = Error{ErrorKind::unavailable, 0, what, {},
                          fmt::format("no node of the cluster had a free slot within {} ms ({} tries; last: {})",
                                      kForwardWait.count(), c.attempts, c.refusal)};
          } else if (auto sent = send(c); !sent) {
            error = sent.error();
          }
        } else if (c.state == Call::State::running && now - c.heard_at > kForwardSilence) {
          error = Error{ErrorKind::protocol, 0, what, {},
                        fmt::format("the node running it stopped answering for {} ms (it died or lost NATS); it "
                                    "may have run, its record is on node {}",
                                    kForwardSilence.count(), c.node)};
        } else if (c.state == Call::State::running && now > c.run_deadline) {
          error = Error{ErrorKind::protocol, 0, what, {},
                        fmt::format("no result from node {} within the function's timeout ({} ms) and {} ms more",
                                    c.node, c.timeout.count(), kRunMargin.count())};
        }
        if (error) {
          failed.emplace_back(std::move(it->second), std::move(*error));
          it = calls_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& [c, e] : failed) c->done(std::unexpected(std::move(e)));
  }
}

}  // namespace fnexec::cluster
