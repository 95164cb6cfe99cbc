// libFuzzer target: ReplyParser on arbitrary function output, fed in pieces whose sizes come from
// the input. Every frame it yields must survive a round trip through append_reply.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "invoke/frames.h"

using namespace fnexec::invoke::frames;

namespace {

std::vector<Reply> drain(ReplyParser& p, bool& failed) {
  std::vector<Reply> out;
  for (;;) {
    auto r = p.next();
    if (!r) {
      failed = true;
      return out;
    }
    if (!*r) return out;
    out.push_back(std::move(**r));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  // The first two bytes pick the chunk size and the payload limit.
  size_t chunk = data[0] % 64 + 1;
  uint64_t max = data[1] < 128 ? data[1] : UINT64_MAX;
  std::string_view in(reinterpret_cast<const char*>(data) + 2, size - 2);

  ReplyParser p(max);
  std::vector<Reply> got;
  bool failed = false;
  for (size_t i = 0; i < in.size() && !failed; i += chunk) {
    p.feed(in.substr(i, chunk));
    auto frames = drain(p, failed);
    for (auto& f : frames) got.push_back(std::move(f));
  }
  if (failed != p.failed()) std::abort();

  // What parsed must re-encode to bytes that parse to the same frames.
  std::string again;
  for (const auto& r : got) append_reply(again, r.kind, r.id, r.body);
  ReplyParser q(max);
  q.feed(again);
  bool failed_again = false;
  auto reparsed = drain(q, failed_again);
  if (failed_again || reparsed.size() != got.size() || q.buffered() != 0) std::abort();
  for (size_t i = 0; i < got.size(); ++i)
    if (reparsed[i].kind != got[i].kind || reparsed[i].id != got[i].id || reparsed[i].body != got[i].body)
      std::abort();
  if (!failed && p.buffered() > in.size()) std::abort();
  return 0;
}
