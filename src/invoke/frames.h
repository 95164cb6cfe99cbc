// The "fnexec/1" frame protocol between fnexec and a long-lived function process (lifecycles
// `fresh` and `reuse`; see fnexec-protocol(7)). fnexec writes EVENT frames to the function's stdin
// and parses READY / INIT_ERROR / OK / ERROR frames from its stdout.
//
// A frame is one ASCII header line of at most 256 bytes including its "\n"; frames with a length
// field then carry exactly that many payload bytes and one "\n". The function side of the protocol
// lives in the helpers under runtime/helpers/ (Python, Node, C, shell).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "util/error.h"

namespace fnexec::invoke::frames {

inline constexpr std::string_view kProtocol = "fnexec/1";
inline constexpr size_t kMaxHeaderBytes = 256;             // including the "\n"
inline constexpr uint64_t kMaxLength = uint64_t{1} << 40;  // the largest <len> the grammar allows
inline constexpr size_t kMaxIdBytes = 64;

enum class ReplyKind { ready, init_error, ok, error };
// The kind as it appears on the wire: "READY", "INIT_ERROR", "OK", "ERROR".
std::string_view to_string(ReplyKind kind);

struct Reply {
  ReplyKind kind = ReplyKind::ready;
  std::string id;    // the event id for ok/error, empty for ready/init_error
  std::string body;  // the payload: result bytes (ok) or the function's JSON (init_error, error)
};

// True when id matches [A-Za-z0-9._-]{1,64}.
bool valid_id(std::string_view id);

// "EVENT <id> <deadline_ms> <len>\n<payload>\n". id must be valid_id() and deadline_ms >= 0
// (a negative deadline is sent as 0, already expired).
std::string encode_event(std::string_view id, int64_t deadline_ms, std::string_view payload);
void append_event(std::string& out, std::string_view id, int64_t deadline_ms, std::string_view payload);
// Only the header line, for a writer that sends header, payload and "\n" with one writev and so
// never copies a large payload.
void append_event_header(std::string& out, std::string_view id, int64_t deadline_ms, uint64_t payload_len);

// The function's side, for tests and tools that play a function from C++: READY ignores id and
// body, INIT_ERROR ignores id.
void append_reply(std::string& out, ReplyKind kind, std::string_view id, std::string_view body);

// Incremental parser of a function's stdout: feed() chunks of any size, then call next() until
// it yields std::nullopt (needs more bytes). Enforces the frame grammar and the order rules that
// need no knowledge of the current event: READY or INIT_ERROR first and once, no OK/ERROR before
// READY, nothing after INIT_ERROR. Whether an OK/ERROR answers the current event is the caller's
// check (check_reply_id). After an error the parser stays failed and returns that error again.
class ReplyParser {
 public:
  // A payload over max_payload_bytes fails with "result over max_output_bytes" (output_too_large()).
  explicit ReplyParser(uint64_t max_payload_bytes);

  void feed(std::string_view bytes);
  // A complete frame, std::nullopt when more bytes are needed, or an ErrorKind::protocol error
  // naming what was malformed, e.g. "frame header 'FOO 1' has an unknown kind".
  Result<std::optional<Reply>> next();

  // Bytes fed and not yet returned in a frame (a partial header or payload, or whole frames).
  uint64_t buffered() const;
  bool ready_seen() const { return ready_seen_; }
  bool failed() const { return error_.has_value(); }
  // The failure was a payload over the limit, not malformed output.
  bool output_too_large() const { return too_large_; }

 private:
  enum class State { header, payload, trailer };
  Result<std::optional<Reply>> failure(std::string detail);
  Result<std::optional<Reply>> parse_header(std::string_view line);
  void compact();

  uint64_t max_payload_;
  std::string buf_;  // received bytes; [pos_, size) not yet consumed
  size_t pos_ = 0;
  State state_ = State::header;
  uint64_t payload_len_ = 0;
  Reply pending_;       // the frame whose payload is arriving
  std::string header_;  // its header line, for error messages about the payload
  bool ready_seen_ = false;
  bool init_error_seen_ = false;
  bool too_large_ = false;
  std::optional<Error> error_;
};

// Fails with ErrorKind::protocol unless reply answers the event event_id (OK or ERROR with that
// id); READY and INIT_ERROR never answer an event.
Result<> check_reply_id(const Reply& reply, std::string_view event_id);

}  // namespace fnexec::invoke::frames
