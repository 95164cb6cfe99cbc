// Cost of the fnexec/1 codec on the reuse hot path: encoding an EVENT and parsing the function's OK
// reply, per frame, for small and large payloads. Run by hand: build/bench/fnexec-bench-frames
#include <chrono>
#include <cstdio>
#include <string>

#include "invoke/frames.h"

using namespace fnexec::invoke::frames;
using Clock = std::chrono::steady_clock;

namespace {

// Parses `frames` copies of one OK reply, fed as the pool would get them: one read per reply.
double parse_ns_per_frame(size_t payload_bytes, int frames) {
  std::string reply;
  append_reply(reply, ReplyKind::ok, "1234", std::string(payload_bytes, 'x'));
  ReplyParser parser(uint64_t{1} << 30);
  parser.feed("READY fnexec/1\n");
  (void)parser.next();
  size_t total = 0;
  auto start = Clock::now();
  for (int i = 0; i < frames; ++i) {
    parser.feed(reply);
    auto r = parser.next();
    if (!r || !*r) {
      std::fprintf(stderr, "parse failed\n");
      std::exit(1);
    }
    total += (*r)->body.size();
  }
  auto ns = std::chrono::duration<double, std::nano>(Clock::now() - start).count();
  if (total != payload_bytes * static_cast<size_t>(frames)) std::exit(1);
  return ns / frames;
}

double encode_ns_per_frame(size_t payload_bytes, int frames) {
  std::string payload(payload_bytes, 'y'), out;
  size_t total = 0;
  auto start = Clock::now();
  for (int i = 0; i < frames; ++i) {
    out.clear();  // the pool reuses its buffer
    append_event(out, "1234", 1764676800123, payload);
    total += out.size();
  }
  auto ns = std::chrono::duration<double, std::nano>(Clock::now() - start).count();
  if (total == 0) std::exit(1);
  return ns / frames;
}

}  // namespace

int main() {
  std::printf("%-12s %14s %14s\n", "payload", "parse ns/frame", "encode ns/frame");
  for (auto [bytes, n] : {std::pair<size_t, int>{0, 2000000}, {64, 2000000}, {1024, 1000000}, {65536, 20000},
                          {5u << 20, 200}}) {
    double p = parse_ns_per_frame(bytes, n);
    double e = encode_ns_per_frame(bytes, n);
    std::printf("%-12zu %14.0f %14.0f\n", bytes, p, e);
  }
}
