#include "invoke/frames.h"

#include <fmt/format.h>

#include <array>
#include <charconv>
#include <cstring>

namespace fnexec::invoke::frames {

namespace {

constexpr const char* kWhat = "parse function output";
// A larger announced payload grows the body as it arrives, so a function that announces 1 TiB
// and sends nothing costs nothing.
constexpr uint64_t kMaxReserve = 16u << 20;

// A header line for an error message: printable ASCII as is, other bytes as \xNN, cut at 80.
std::string quoted(std::string_view s) {
  std::string out = "'";
  size_t n = std::min(s.size(), size_t{80});
  for (size_t i = 0; i < n; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\')
      out += static_cast<char>(c);
    else
      out += fmt::format("\\x{:02x}", c);
  }
  if (s.size() > n) out += "...";
  out += '\'';
  return out;
}

// Checks a <len> field; returns why it is invalid, or an empty string.
std::string_view parse_length(std::string_view s, uint64_t& value) {
  for (char c : s)
    if (c < '0' || c > '9') return "that is not an unsigned decimal number";
  if (s.size() > 1 && s[0] == '0') return "with a leading zero";
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc{} || value > kMaxLength) return "over 2^40";
  return {};
}

void append_number(std::string& out, uint64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, end);
}

// "OK <id> <len>" of a frame whose header is no longer in the buffer.
std::string header_of(const Reply& r, uint64_t len) {
  std::string h(to_string(r.kind));
  if (r.kind == ReplyKind::ok || r.kind == ReplyKind::error) h += " " + r.id;
  return h + " " + std::to_string(len);
}

}  // namespace

std::string_view to_string(ReplyKind kind) {
  switch (kind) {
    case ReplyKind::ready:
      return "READY";
    case ReplyKind::init_error:
      return "INIT_ERROR";
    case ReplyKind::ok:
      return "OK";
    case ReplyKind::error:
      return "ERROR";
  }
  return "?";
}

bool valid_id(std::string_view id) {
  if (id.empty() || id.size() > kMaxIdBytes) return false;
  for (char c : id) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

void append_event_header(std::string& out, std::string_view id, int64_t deadline_ms, uint64_t payload_len) {
  out += "EVENT ";
  out += id;
  out += ' ';
  append_number(out, deadline_ms < 0 ? 0 : static_cast<uint64_t>(deadline_ms));
  out += ' ';
  append_number(out, payload_len);
  out += '\n';
}

void append_event(std::string& out, std::string_view id, int64_t deadline_ms, std::string_view payload) {
  out.reserve(out.size() + payload.size() + 48 + id.size());
  append_event_header(out, id, deadline_ms, payload.size());
  out += payload;
  out += '\n';
}

std::string encode_event(std::string_view id, int64_t deadline_ms, std::string_view payload) {
  std::string out;
  append_event(out, id, deadline_ms, payload);
  return out;
}

void append_reply(std::string& out, ReplyKind kind, std::string_view id, std::string_view body) {
  out += to_string(kind);
  if (kind == ReplyKind::ready) {
    out += ' ';
    out += kProtocol;
    out += '\n';
    return;
  }
  if (kind != ReplyKind::init_error) {
    out += ' ';
    out += id;
  }
  out += ' ';
  append_number(out, body.size());
  out += '\n';
  out += body;
  out += '\n';
}

Result<> check_reply_id(const Reply& reply, std::string_view event_id) {
  if (reply.kind != ReplyKind::ok && reply.kind != ReplyKind::error)
    return fail(
        ErrorKind::protocol, kWhat, {},
        fmt::format("{} frame while event '{}' is waiting for its answer", to_string(reply.kind), event_id));
  if (reply.id != event_id)
    return fail(ErrorKind::protocol, kWhat, {},
                fmt::format("frame '{}' answers event '{}', but the current event is '{}'",
                            header_of(reply, reply.body.size()), reply.id, event_id));
  return {};
}

ReplyParser::ReplyParser(uint64_t max_payload_bytes) : max_payload_(max_payload_bytes) {}

uint64_t ReplyParser::buffered() const {
  uint64_t in_progress = state_ == State::header ? 0 : pending_.body.size();
  return buf_.size() - pos_ + in_progress;
}

void ReplyParser::compact() {
  if (pos_ == buf_.size()) {
    buf_.clear();  // keeps the capacity for the next frame
    pos_ = 0;
  } else if (pos_ >= 4096 && pos_ * 2 >= buf_.size()) {
    buf_.erase(0, pos_);
    pos_ = 0;
  }
}

void ReplyParser::feed(std::string_view bytes) {
  if (error_) return;
  if (state_ == State::payload && pos_ == buf_.size()) {
    // Payload bytes go straight into the reply's body: a large result is copied once.
    uint64_t need = payload_len_ - pending_.body.size();
    size_t take = static_cast<size_t>(std::min<uint64_t>(need, bytes.size()));
    pending_.body.append(bytes.data(), take);
    bytes.remove_prefix(take);
    if (pending_.body.size() == payload_len_) state_ = State::trailer;
  }
  if (bytes.empty()) return;
  compact();
  buf_.append(bytes);
}

Result<std::optional<Reply>> ReplyParser::failure(std::string detail) {
  error_ = Error{ErrorKind::protocol, 0, kWhat, {}, std::move(detail)};
  return std::unexpected(*error_);
}

Result<std::optional<Reply>> ReplyParser::parse_header(std::string_view line) {
  std::array<std::string_view, 4> f;
  size_t n = 0;
  for (size_t start = 0;;) {
    size_t sp = line.find(' ', start);
    std::string_view field = line.substr(start, sp == std::string_view::npos ? sp : sp - start);
    if (field.empty())
      return failure(fmt::format("frame header {} has an empty field (fields are separated by one space)",
                                 quoted(line)));
    if (n == f.size()) return failure(fmt::format("frame header {} has too many fields", quoted(line)));
    f[n++] = field;
    if (sp == std::string_view::npos) break;
    start = sp + 1;
  }

  ReplyKind kind;
  size_t want;
  std::string_view usage;
  if (f[0] == "READY") {
    kind = ReplyKind::ready, want = 2, usage = "READY fnexec/1";
  } else if (f[0] == "OK") {
    kind = ReplyKind::ok, want = 3, usage = "OK <id> <len>";
  } else if (f[0] == "ERROR") {
    kind = ReplyKind::error, want = 3, usage = "ERROR <id> <len>";
  } else if (f[0] == "INIT_ERROR") {
    kind = ReplyKind::init_error, want = 2, usage = "INIT_ERROR <len>";
  } else {
    return failure(
        fmt::format("frame header {} has an unknown kind (is the function writing to stdout "
                    "without a fnexec/1 helper?)",
                    quoted(line)));
  }
  if (n != want)
    return failure(
        fmt::format("frame header {} has {} fields, expected {} ({})", quoted(line), n, want, usage));

  if (init_error_seen_) return failure(fmt::format("frame header {} after INIT_ERROR", quoted(line)));
  if (kind == ReplyKind::ready) {
    if (f[1] != kProtocol)
      return failure(fmt::format("frame header {} asks for protocol {}, fnexec speaks {}", quoted(line),
                                 quoted(f[1]), kProtocol));
    if (ready_seen_) return failure("second READY frame");
    ready_seen_ = true;
    return std::optional<Reply>(Reply{ReplyKind::ready, {}, {}});
  }
  if (kind == ReplyKind::init_error) {
    if (ready_seen_) return failure(fmt::format("frame header {} after READY", quoted(line)));
    init_error_seen_ = true;
  } else if (!ready_seen_) {
    return failure(fmt::format("frame header {} before READY", quoted(line)));
  }

  std::string_view id = kind == ReplyKind::init_error ? std::string_view{} : f[1];
  if (kind != ReplyKind::init_error && !valid_id(id))
    return failure(fmt::format("frame header {} has an invalid id {} (1-64 characters of A-Za-z0-9._-)",
                               quoted(line), quoted(id)));
  std::string_view len_text = f[want - 1];
  uint64_t len = 0;
  if (auto why = parse_length(len_text, len); !why.empty())
    return failure(fmt::format("frame header {} has a length {} {}", quoted(line), quoted(len_text), why));
  if (len > max_payload_) {
    too_large_ = true;
    return failure(
        fmt::format("result over max_output_bytes: frame header {} announces {} bytes, the "
                    "limit is {}",
                    quoted(line), len, max_payload_));
  }

  pending_.kind = kind;
  pending_.id.assign(id);
  pending_.body.clear();
  pending_.body.reserve(static_cast<size_t>(std::min(len, kMaxReserve)));
  payload_len_ = len;
  state_ = len == 0 ? State::trailer : State::payload;
  return std::optional<Reply>();
}

Result<std::optional<Reply>> ReplyParser::next() {
  if (error_) return std::unexpected(*error_);
  for (;;) {
    size_t avail = buf_.size() - pos_;
    switch (state_) {
      case State::header: {
        if (avail == 0) {
          compact();
          return std::optional<Reply>();
        }
        const char* p = buf_.data() + pos_;
        auto* nl = static_cast<const char*>(std::memchr(p, '\n', std::min(avail, kMaxHeaderBytes)));
        if (nl == nullptr) {
          if (avail >= kMaxHeaderBytes)
            return failure(fmt::format("frame header {} has no newline within {} bytes", quoted({p, avail}),
                                       kMaxHeaderBytes));
          return std::optional<Reply>();
        }
        std::string_view line(p, static_cast<size_t>(nl - p));
        pos_ += line.size() + 1;
        auto r = parse_header(line);
        if (!r || *r) return r;
        break;
      }
      case State::payload: {
        uint64_t need = payload_len_ - pending_.body.size();
        size_t take = static_cast<size_t>(std::min<uint64_t>(need, avail));
        pending_.body.append(buf_, pos_, take);
        pos_ += take;
        if (pending_.body.size() < payload_len_) {
          compact();
          return std::optional<Reply>();
        }
        state_ = State::trailer;
        break;
      }
      case State::trailer: {
        if (avail == 0) {
          compact();
          return std::optional<Reply>();
        }
        if (buf_[pos_] != '\n')
          return failure(fmt::format(
              "frame '{}' is followed by {} instead of a newline after its {} payload "
              "bytes",
              header_of(pending_, payload_len_), quoted(std::string_view(&buf_[pos_], 1)), payload_len_));
        ++pos_;
        state_ = State::header;
        std::optional<Reply> out(std::move(pending_));
        pending_ = Reply{};
        return out;
      }
    }
  }
}

}  // namespace fnexec::invoke::frames
