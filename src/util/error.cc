#include "util/error.h"

#include <cstring>

namespace fnexec {

std::string Error::message() const {
  std::string m = "cannot " + what;
  if (!on.empty()) m += " " + on;
  if (!detail.empty()) m += ": " + detail;
  if (err != 0) m += std::string(detail.empty() ? ": " : " (") + std::strerror(err) + (detail.empty() ? "" : ")");
  return m;
}

Error& Error::context(std::string prefix) {
  what = std::move(prefix) + ": " + what;
  return *this;
}

}  // namespace fnexec
