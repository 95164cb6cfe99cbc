// A small JSON writer for the daemon's responses (parsing is simdjson's job).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fnexec::server {

// Appends s as a JSON string literal (quotes included); invalid UTF-8 bytes become U+FFFD.
void append_json_string(std::string& out, std::string_view s);
std::string json_string(std::string_view s);

// True when s is well-formed UTF-8 (no overlongs, surrogates or truncated sequences).
bool is_valid_utf8(std::string_view s);
// Standard base64 (RFC 4648 section 4) with padding; decode returns nullopt for anything else.
std::string base64_encode(std::string_view bytes);
std::optional<std::string> base64_decode(std::string_view text);

// Builds one JSON object or array in order: {"a":1,"b":"x"}. Keys are written as given (escaped).
class JsonWriter {
 public:
  JsonWriter& begin_object();
  JsonWriter& end_object();
  JsonWriter& begin_array();
  JsonWriter& end_array();
  JsonWriter& key(std::string_view k);
  JsonWriter& value(std::string_view s);
  JsonWriter& value(const char* s) { return value(std::string_view(s)); }
  JsonWriter& value(const std::string& s) { return value(std::string_view(s)); }
  JsonWriter& value(int64_t v);
  JsonWriter& value(uint64_t v);
  JsonWriter& value(int v) { return value(static_cast<int64_t>(v)); }
  JsonWriter& value(uint32_t v) { return value(static_cast<uint64_t>(v)); }
  JsonWriter& value(double v);
  JsonWriter& value(bool v);
  JsonWriter& null();
  // Already-serialized JSON, inserted as one value.
  JsonWriter& raw(std::string_view json);
  template <class T>
  JsonWriter& value(const std::optional<T>& v) {
    return v ? value(*v) : null();
  }
  JsonWriter& value(const std::vector<std::string>& v);
  template <class T>
  JsonWriter& field(std::string_view k, const T& v) {
    key(k);
    return value(v);
  }

  const std::string& str() const { return out_; }
  std::string take() { return std::move(out_); }

 private:
  void separate();
  std::string out_;
  bool need_comma_ = false;
};

// {"error":"MESSAGE"}
std::string json_error(std::string_view message);

}  // namespace fnexec::server
