#include <doctest/doctest.h>

#include <random>
#include <vector>

#include "invoke/frames.h"

using namespace fnexec;
using namespace fnexec::invoke::frames;

namespace {

std::string with_nul_and_newlines(size_t n) {
  std::string s(n, '\0');
  std::mt19937 rng(11);
  for (auto& c : s) c = static_cast<char>(rng());
  if (n >= 3) s[0] = '\n', s[n / 2] = '\0', s[n - 1] = '\n';
  return s;
}

std::string ready() {
  return "READY fnexec/1\n";
}

std::string reply(ReplyKind kind, std::string_view id, std::string_view body) {
  std::string out;
  append_reply(out, kind, id, body);
  return out;
}

// Feeds the chunks one by one and drains after each; fails the test on a parse error.
std::vector<Reply> parse_all(ReplyParser& p, const std::vector<std::string_view>& chunks) {
  std::vector<Reply> out;
  for (auto chunk : chunks) {
    p.feed(chunk);
    for (;;) {
      auto r = p.next();
      if (!r) FAIL(r.error().message());
      if (!*r) break;
      out.push_back(std::move(**r));
    }
  }
  return out;
}

// The error detail the parser gives for this stream, fed in one piece ("" when it parses).
std::string parse_error(std::string_view stream, uint64_t max = 1 << 20) {
  ReplyParser p(max);
  p.feed(stream);
  for (;;) {
    auto r = p.next();
    if (!r) {
      CHECK(r.error().kind == ErrorKind::protocol);
      CHECK(p.failed());
      return r.error().detail;
    }
    if (!*r) return {};
  }
}

bool same(const Reply& a, const Reply& b) {
  return a.kind == b.kind && a.id == b.id && a.body == b.body;
}

}  // namespace

TEST_CASE("encode_event writes header, exact payload bytes and a newline") {
  CHECK(encode_event("e1", 1764676800123, "") == "EVENT e1 1764676800123 0\n\n");
  CHECK(encode_event("e1", 0, "x") == "EVENT e1 0 1\nx\n");
  CHECK(encode_event("a.b_c-9", -5, "{}") == "EVENT a.b_c-9 0 2\n{}\n");  // past deadlines are sent as 0
  std::string big = with_nul_and_newlines(5 << 20);
  std::string framed = encode_event("big", 42, big);
  std::string head = "EVENT big 42 5242880\n";
  REQUIRE(framed.size() == head.size() + big.size() + 1);
  CHECK(framed.starts_with(head));
  CHECK(framed.compare(head.size(), big.size(), big) == 0);
  CHECK(framed.back() == '\n');

  std::string out = "prefix";
  append_event_header(out, "id", 7, 1ull << 40);
  CHECK(out == "prefixEVENT id 7 1099511627776\n");
}

TEST_CASE("append_reply writes the four reply kinds") {
  CHECK(reply(ReplyKind::ready, "ignored", "ignored") == "READY fnexec/1\n");
  CHECK(reply(ReplyKind::init_error, "ignored", "{}") == "INIT_ERROR 2\n{}\n");
  CHECK(reply(ReplyKind::ok, "7", "") == "OK 7 0\n\n");
  CHECK(reply(ReplyKind::error, "7", "{\"errorType\":\"E\"}") == "ERROR 7 17\n{\"errorType\":\"E\"}\n");
  CHECK(to_string(ReplyKind::init_error) == "INIT_ERROR");
}

TEST_CASE("ReplyParser returns exact payloads: 0 B, 1 B, 5 MiB binary with newlines and NULs") {
  std::string big = with_nul_and_newlines(5 << 20);
  for (std::string_view body :
       {std::string_view{}, std::string_view{"\n"}, std::string_view{"\0", 1}, std::string_view{big}}) {
    ReplyParser p(8 << 20);
    std::string stream = ready() + reply(ReplyKind::ok, "ev-1", body);
    auto got = parse_all(p, {stream});
    REQUIRE(got.size() == 2);
    CHECK(got[0].kind == ReplyKind::ready);
    CHECK(got[1].kind == ReplyKind::ok);
    CHECK(got[1].id == "ev-1");
    CHECK(got[1].body.size() == body.size());
    CHECK(got[1].body == body);
    CHECK(p.buffered() == 0);
  }
}

TEST_CASE("ReplyParser yields the same frames however the stream is split") {
  std::string err = R"({"errorType":"ValueError","errorMessage":"no","stackTrace":[]})";
  std::string stream = ready() + reply(ReplyKind::ok, "1", "") + reply(ReplyKind::ok, "2", "x") +
                       reply(ReplyKind::error, "3", err) +
                       reply(ReplyKind::ok, "4", std::string("a\nb\0c\n\n", 7)) +
                       reply(ReplyKind::ok, "5", "OK 5 1\n");
  ReplyParser whole(1 << 20);
  auto expected = parse_all(whole, {stream});  // several frames in one feed
  REQUIRE(expected.size() == 6);
  CHECK(expected[3].kind == ReplyKind::error);
  CHECK(expected[3].body == err);
  CHECK(expected[4].body == std::string("a\nb\0c\n\n", 7));
  CHECK(expected[5].body == "OK 5 1\n");

  SUBCASE("every split into two feeds") {
    for (size_t i = 0; i <= stream.size(); ++i) {
      ReplyParser p(1 << 20);
      std::string_view s(stream);
      auto got = parse_all(p, {s.substr(0, i), s.substr(i)});
      REQUIRE(got.size() == expected.size());
      for (size_t k = 0; k < got.size(); ++k) CHECK_MESSAGE(same(got[k], expected[k]), "split at ", i);
      CHECK(p.buffered() == 0);
    }
  }
  SUBCASE("one byte per feed") {
    ReplyParser p(1 << 20);
    std::vector<std::string_view> bytes;
    for (size_t i = 0; i < stream.size(); ++i) bytes.push_back(std::string_view(stream).substr(i, 1));
    auto got = parse_all(p, bytes);
    REQUIRE(got.size() == expected.size());
    for (size_t k = 0; k < got.size(); ++k) CHECK(same(got[k], expected[k]));
  }
  SUBCASE("a 5 MiB payload in odd-sized chunks, the header split too") {
    std::string big = with_nul_and_newlines(5 << 20);
    std::string s2 = ready() + reply(ReplyKind::ok, "big", big) + reply(ReplyKind::ok, "after", "y");
    std::vector<std::string_view> chunks;
    std::string_view rest(s2);
    for (size_t n : {size_t{17}, size_t{1}, size_t{3}})
      chunks.push_back(rest.substr(0, n)), rest.remove_prefix(n);
    while (!rest.empty()) {
      size_t n = std::min(rest.size(), size_t{65521});
      chunks.push_back(rest.substr(0, n));
      rest.remove_prefix(n);
    }
    ReplyParser p(5 << 20);
    auto got = parse_all(p, chunks);
    REQUIRE(got.size() == 3);
    CHECK(got[1].body == big);
    CHECK(got[2].id == "after");
    CHECK(got[2].body == "y");
  }
}

TEST_CASE("ReplyParser waits for more bytes and reports what it holds") {
  ReplyParser p(100);
  p.feed("READY fnexec/1\nOK a 5\nab");
  auto r = p.next();
  REQUIRE(r);
  REQUIRE(*r);
  CHECK((*r)->kind == ReplyKind::ready);
  r = p.next();
  REQUIRE(r);
  CHECK(!*r);
  CHECK(p.buffered() == 2);
  p.feed("cde");
  r = p.next();
  REQUIRE(r);
  CHECK(!*r);  // the payload is complete but its trailing newline is not there yet
  p.feed("\n");
  r = p.next();
  REQUIRE(r);
  REQUIRE(*r);
  CHECK((*r)->body == "abcde");
  CHECK(p.buffered() == 0);
  CHECK(p.ready_seen());
}

TEST_CASE("ReplyParser names each malformed frame") {
  std::string r = ready();
  CHECK(parse_error(r + "FOO 1\n") ==
        "frame header 'FOO 1' has an unknown kind (is the function writing to stdout without a fnexec/1 "
        "helper?)");
  CHECK(parse_error("hello from print()\n")
            .starts_with("frame header 'hello from print()' has an unknown kind"));
  CHECK(parse_error("\n") == "frame header '' has an empty field (fields are separated by one space)");
  CHECK(parse_error(r + "OK  a 1\nx\n").starts_with("frame header 'OK  a 1' has an empty field"));
  CHECK(parse_error(r + "OK a 1 \nx\n").starts_with("frame header 'OK a 1 ' has an empty field"));
  CHECK(parse_error(r + "ok a 1\nx\n").starts_with("frame header 'ok a 1' has an unknown kind"));
  CHECK(parse_error(r + "OK a\n") == "frame header 'OK a' has 2 fields, expected 3 (OK <id> <len>)");
  CHECK(parse_error(r + "OK a 1 2\n") == "frame header 'OK a 1 2' has 4 fields, expected 3 (OK <id> <len>)");
  CHECK(parse_error(r + "ERROR a 1 2 3\n") == "frame header 'ERROR a 1 2 3' has too many fields");
  CHECK(parse_error("READY\n") == "frame header 'READY' has 1 fields, expected 2 (READY fnexec/1)");
  CHECK(parse_error("INIT_ERROR\n") ==
        "frame header 'INIT_ERROR' has 1 fields, expected 2 (INIT_ERROR <len>)");
  CHECK(parse_error("READY fnexec/2\n") ==
        "frame header 'READY fnexec/2' asks for protocol 'fnexec/2', fnexec speaks fnexec/1");
  CHECK(parse_error(r + "OK a 1\r\nx\n") ==
        "frame header 'OK a 1\\x0d' has a length '1\\x0d' that is not an "
        "unsigned decimal number");
  CHECK(parse_error(r + "OK a\x01 1\nx\n").starts_with("frame header 'OK a\\x01 1' has an invalid id"));

  SUBCASE("order: READY first and once, nothing after INIT_ERROR") {
    CHECK(parse_error(r + r) == "second READY frame");
    CHECK(parse_error(r + "INIT_ERROR 2\n{}\n") == "frame header 'INIT_ERROR 2' after READY");
    CHECK(parse_error("OK a 1\nx\n") == "frame header 'OK a 1' before READY");
    CHECK(parse_error("ERROR a 2\n{}\n") == "frame header 'ERROR a 2' before READY");
    CHECK(parse_error("INIT_ERROR 2\n{}\n" + r) == "frame header 'READY fnexec/1' after INIT_ERROR");
    CHECK(parse_error("INIT_ERROR 2\n{}\n").empty());
  }
  SUBCASE("a missing newline after the payload") {
    CHECK(parse_error(r + "OK a 3\nabcX") ==
          "frame 'OK a 3' is followed by 'X' instead of a newline after its 3 payload bytes");
    CHECK(parse_error(r + "OK a 0\nOK a 0\n\n") ==
          "frame 'OK a 0' is followed by 'O' instead of a newline after its 0 payload bytes");
    CHECK(parse_error("INIT_ERROR 1\n{}\n") ==
          "frame 'INIT_ERROR 1' is followed by '}' instead of a newline after its 1 payload bytes");
  }
  SUBCASE("a header line of at most 256 bytes including its newline") {
    std::string max_line(255, 'x');
    CHECK(parse_error(max_line + "\n").starts_with("frame header 'xxxx"));  // judged, not too long
    CHECK(parse_error(max_line + "\n").find("unknown kind") != std::string::npos);
    std::string long_line(256, 'x');
    CHECK(parse_error(long_line + "\n") ==
          "frame header '" + std::string(80, 'x') + "...' has no newline within 256 bytes");
    ReplyParser p(100);
    p.feed(max_line);  // 255 bytes without a newline: a header may still come
    auto res = p.next();
    REQUIRE(res);
    CHECK(!*res);
    p.feed("y");
    CHECK(!p.next());
  }
  SUBCASE("ids: [A-Za-z0-9._-]{1,64}") {
    std::string id64(64, 'i');
    CHECK(parse_error(r + "OK " + id64 + " 0\n\n").empty());
    CHECK(parse_error(r + "OK Az09._- 0\n\n").empty());
    CHECK(parse_error(r + "OK " + id64 + "i 0\n\n") == "frame header 'OK " + id64 +
                                                           "i 0' has an invalid id '" + id64 +
                                                           "i' (1-64 characters of A-Za-z0-9._-)");
    CHECK(parse_error(r + "OK a/b 0\n\n") ==
          "frame header 'OK a/b 0' has an invalid id 'a/b' (1-64 characters of A-Za-z0-9._-)");
    CHECK(parse_error(r + "ERROR \xc3\xa9 0\n\n").find("has an invalid id '\\xc3\\xa9'") !=
          std::string::npos);
    CHECK(valid_id("a"));
    CHECK(valid_id(id64));
    CHECK(!valid_id(""));
    CHECK(!valid_id(id64 + "i"));
    CHECK(!valid_id("a b"));
    CHECK(!valid_id("a:b"));
  }
  SUBCASE("lengths: decimal, no sign, no leading zeros, at most 2^40") {
    CHECK(parse_error(r + "OK a 0\n\n").empty());
    CHECK(parse_error(r + "OK a 01\nx\n") == "frame header 'OK a 01' has a length '01' with a leading zero");
    CHECK(parse_error(r + "OK a 00\n\n") == "frame header 'OK a 00' has a length '00' with a leading zero");
    CHECK(parse_error(r + "OK a +1\nx\n")
              .ends_with("has a length '+1' that is not an unsigned decimal number"));
    CHECK(parse_error(r + "OK a -1\nx\n")
              .ends_with("has a length '-1' that is not an unsigned decimal number"));
    CHECK(
        parse_error(r + "OK a 1e3\n").ends_with("has a length '1e3' that is not an unsigned decimal number"));
    CHECK(
        parse_error(r + "OK a 0x1\n").ends_with("has a length '0x1' that is not an unsigned decimal number"));
    CHECK(parse_error(r + "OK a 1099511627777\n", UINT64_MAX) ==
          "frame header 'OK a 1099511627777' has a length '1099511627777' over 2^40");
    CHECK(parse_error(r + "OK a 99999999999999999999999\n", UINT64_MAX).ends_with("over 2^40"));
    CHECK(parse_error(r + "OK a 1099511627776\n", UINT64_MAX).empty());  // 2^40 itself: waits for the bytes
  }
}

TEST_CASE("ReplyParser rejects a payload over max_output_bytes before reading it") {
  CHECK(parse_error(ready() + "OK a 10\n0123456789\n", 10).empty());
  ReplyParser p(10);
  p.feed(ready() + "ERROR a 11\n");
  REQUIRE(p.next());
  auto r = p.next();
  REQUIRE(!r);
  CHECK(r.error().message() ==
        "cannot parse function output: result over max_output_bytes: frame header 'ERROR a 11' announces 11 "
        "bytes, the limit is 10");
  CHECK(p.output_too_large());
  // The parser stays failed, and further bytes change nothing.
  p.feed("x\n");
  auto again = p.next();
  REQUIRE(!again);
  CHECK(again.error().detail == r.error().detail);

  ReplyParser malformed(10);
  malformed.feed("BAD\n");
  CHECK(!malformed.next());
  CHECK(!malformed.output_too_large());
}

TEST_CASE("check_reply_id accepts only the answer to the current event") {
  CHECK(check_reply_id(Reply{ReplyKind::ok, "e7", "x"}, "e7"));
  CHECK(check_reply_id(Reply{ReplyKind::error, "e7", "{}"}, "e7"));
  auto wrong = check_reply_id(Reply{ReplyKind::ok, "e6", "abc"}, "e7");
  REQUIRE(!wrong);
  CHECK(wrong.error().kind == ErrorKind::protocol);
  CHECK(wrong.error().detail == "frame 'OK e6 3' answers event 'e6', but the current event is 'e7'");
  auto ready_reply = check_reply_id(Reply{ReplyKind::ready, {}, {}}, "e7");
  REQUIRE(!ready_reply);
  CHECK(ready_reply.error().detail == "READY frame while event 'e7' is waiting for its answer");
}
