#include "cgroup/parse.h"

#include <charconv>
#include <cmath>

#include "cgroup/cgroup.h"

namespace fnexec::cgroup {

namespace {

std::vector<std::string_view> split(std::string_view text, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    size_t end = text.find(sep, start);
    out.push_back(text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (end == std::string_view::npos) return out;
    start = end + 1;
  }
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\n')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n')) s.remove_suffix(1);
  return s;
}

template <class T>
std::optional<T> to_number(std::string_view s) {
  T v{};
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape_octal(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      bool ok = true;
      for (size_t j = 1; j <= 3; ++j) {
        if (s[i + j] < '0' || s[i + j] > '7')
          ok = false;
        else
          v = v * 8 + (s[i + j] - '0');
      }
      if (ok) {
        out += static_cast<char>(v);
        i += 3;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

}  // namespace

Result<std::vector<ProcCgroupEntry>> parse_proc_cgroup(std::string_view text) {
  std::vector<ProcCgroupEntry> out;
  for (auto line : split(text, '\n')) {
    if (line.empty()) continue;
    size_t a = line.find(':');
    size_t b = a == std::string_view::npos ? a : line.find(':', a + 1);
    if (b == std::string_view::npos)
      return fail(ErrorKind::corrupt, "parse /proc/self/cgroup line", std::string(line));
    auto id = to_number<int>(line.substr(0, a));
    auto path = line.substr(b + 1);
    if (!id || path.empty() || path.front() != '/')
      return fail(ErrorKind::corrupt, "parse /proc/self/cgroup line", std::string(line));
    ProcCgroupEntry e;
    e.hierarchy_id = *id;
    auto ctrls = line.substr(a + 1, b - a - 1);
    if (!ctrls.empty())
      for (auto c : split(ctrls, ',')) e.controllers.emplace_back(c);
    e.path = path;
    out.push_back(std::move(e));
  }
  return out;
}

std::vector<CgroupMount> parse_cgroup_mounts(std::string_view mountinfo) {
  // Fields: id parent major:minor root mount_point options [optional...] - fstype source super_options
  std::vector<CgroupMount> out;
  for (auto line : split(mountinfo, '\n')) {
    auto fields = split(line, ' ');
    size_t dash = 0;
    while (dash < fields.size() && fields[dash] != "-") ++dash;
    if (dash < 5 || dash + 3 >= fields.size()) continue;
    auto fstype = fields[dash + 1];
    if (fstype != "cgroup" && fstype != "cgroup2") continue;
    CgroupMount m;
    m.root = unescape_octal(fields[3]);
    m.mount_point = unescape_octal(fields[4]);
    m.v2 = fstype == "cgroup2";
    for (auto o : split(fields[dash + 3], ',')) m.options.emplace_back(o);
    out.push_back(std::move(m));
  }
  return out;
}

std::optional<uint64_t> keyed_value(std::string_view text, std::string_view key) {
  for (auto line : split(text, '\n')) {
    if (line.size() > key.size() && line.starts_with(key) && line[key.size()] == ' ')
      return to_number<uint64_t>(trim(line.substr(key.size() + 1)));
  }
  return std::nullopt;
}

std::optional<uint64_t> single_value(std::string_view text) {
  return to_number<uint64_t>(trim(text));
}

std::vector<pid_t> parse_pids(std::string_view text) {
  std::vector<pid_t> out;
  for (auto line : split(text, '\n'))
    if (auto p = to_number<pid_t>(trim(line)); p && *p > 0) out.push_back(*p);
  return out;
}

std::vector<std::string> split_words(std::string_view text) {
  std::vector<std::string> out;
  for (auto w : split(trim(text), ' '))
    if (!w.empty()) out.emplace_back(w);
  return out;
}

uint64_t cpu_quota_us(double cpus, uint64_t period_us) {
  auto q = static_cast<uint64_t>(std::llround(cpus * static_cast<double>(period_us)));
  return q < 1000 ? 1000 : q;
}

std::string format_cpu_max(double cpus, uint64_t period_us) {
  return std::to_string(cpu_quota_us(cpus, period_us)) + " " + std::to_string(period_us);
}

std::optional<std::pair<int, int>> kernel_major_minor(std::string_view release) {
  auto parts = split(release, '.');
  if (parts.size() < 2) return std::nullopt;
  auto major = to_number<int>(parts[0]);
  auto minor_text = parts[1];
  size_t digits = 0;
  while (digits < minor_text.size() && minor_text[digits] >= '0' && minor_text[digits] <= '9') ++digits;
  auto minor = to_number<int>(minor_text.substr(0, digits));
  if (!major || !minor) return std::nullopt;
  return std::pair{*major, *minor};
}

bool valid_id(std::string_view id) {
  if (id.empty() || id.size() > 64 || id.front() == '.') return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '.' || c == '-';
    if (!ok) return false;
  }
  return true;
}

Result<uint64_t> parse_size(std::string_view text) {
  auto bad = [&] {
    return fail(ErrorKind::invalid, "parse size", "'" + std::string(text) + "'",
                "expected a number with an optional unit b, k, m, g, t (e.g. 512m, 1.5g)");
  };
  auto s = trim(text);
  size_t num_end = 0;
  while (num_end < s.size() && ((s[num_end] >= '0' && s[num_end] <= '9') || s[num_end] == '.')) ++num_end;
  auto number = s.substr(0, num_end);
  std::string unit;
  for (char c : trim(s.substr(num_end))) unit += static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
  if (unit.size() > 1 && unit.ends_with("ib"))
    unit.resize(unit.size() - 2);
  else if (unit.size() > 1 && unit.back() == 'b')
    unit.pop_back();
  int shift = 0;
  if (unit.empty() || unit == "b")
    shift = 0;
  else if (unit == "k")
    shift = 10;
  else if (unit == "m")
    shift = 20;
  else if (unit == "g")
    shift = 30;
  else if (unit == "t")
    shift = 40;
  else
    return bad();
  if (number.find('.') == std::string_view::npos) {
    auto v = to_number<uint64_t>(number);
    if (!v || (shift && *v > (UINT64_MAX >> shift))) return bad();
    return *v << shift;
  }
  auto v = to_number<double>(number);
  if (!v || !std::isfinite(*v) || *v < 0) return bad();
  double bytes = std::ldexp(*v, shift);
  if (bytes >= 1.8e19) return bad();
  return static_cast<uint64_t>(bytes);
}

Result<double> parse_cpus(std::string_view text) {
  auto v = to_number<double>(trim(text));
  if (!v || !std::isfinite(*v) || *v <= 0 || *v > 1024)
    return fail(ErrorKind::invalid, "parse cpus", "'" + std::string(text) + "'",
                "expected a number of CPUs greater than 0, e.g. 0.5 or 2");
  return *v;
}

}  // namespace fnexec::cgroup
