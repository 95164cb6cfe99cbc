// ChildPlan -> the flat block the sandbox init reads (runtime/protocol.h).
#include <cstring>

#include "sandbox/setup_plan.h"

namespace fnexec::sandbox::detail {

namespace {

namespace wire = runtime::wire;

class BlockWriter {
 public:
  BlockWriter() { buf_.resize(sizeof(wire::Header)); }

  // Appends raw bytes, 8-aligned; returns their offset.
  wire::Off bytes(const void* data, size_t n) {
    buf_.resize((buf_.size() + 7) & ~size_t{7});
    wire::Off at = buf_.size();
    buf_.append(static_cast<const char*>(data), n);
    return at;
  }
  wire::Off str(const char* s) { return s ? bytes(s, std::strlen(s) + 1) : 0; }
  // A 0-terminated array of string offsets; nullptr entries end it early.
  template <class Range>
  wire::Off strings(const Range& items) {
    std::vector<wire::Off> offs;
    for (const char* s : items) {
      if (!s) break;
      offs.push_back(str(s));
    }
    offs.push_back(0);
    return bytes(offs.data(), offs.size() * sizeof(wire::Off));
  }
  template <class T>
  wire::Off array(const std::vector<T>& v) {
    return v.empty() ? 0 : bytes(v.data(), v.size() * sizeof(T));
  }
  std::string finish(wire::Header h) {
    h.size = buf_.size();
    std::memcpy(buf_.data(), &h, sizeof h);
    return std::move(buf_);
  }

 private:
  std::string buf_;
};

}  // namespace

std::string encode_for_init(const ChildPlan& plan) {
  static_assert(sizeof(sock_filter) == 8 && sizeof(gid_t) == sizeof(uint32_t));
  BlockWriter w;
  wire::Header h;
  h.flags = (plan.init ? wire::kInit : 0) | (plan.wait_attach ? wire::kWaitAttach : 0) |
            (plan.die_with_parent ? wire::kDieWithParent : 0) |
            (plan.privileges.seccomp_enabled ? wire::kSeccomp : 0) | (plan.function_nice ? wire::kRenice : 0);
  h.nice = plan.function_nice.value_or(0);
  h.control_fd = plan.control_fd;
  h.error_fd = plan.error_fd;
  h.status_fd = plan.status_fd;
  h.userns_fd = plan.userns_fd;
  for (int i = 0; i < 3; ++i) h.stdio_fds[i] = plan.stdio_fds[i];

  std::vector<wire::Op> ops;
  for (const auto& op : plan.ops) {
    wire::Op o{op.kind};
    o.target = op.target;
    o.mode = op.mode;
    o.path = w.str(op.path);
    o.source = w.str(op.source);
    o.fstype = w.str(op.fstype);
    o.data = w.str(op.data);
    o.flags = op.flags;
    o.dev = op.dev;
    o.uid = op.uid;
    o.gid = op.gid;
    o.fd = op.fd;
    ops.push_back(o);
  }
  h.n_ops = static_cast<uint32_t>(ops.size());
  h.ops = w.array(ops);
  h.hostname = w.str(plan.hostname);
  h.hostname_len = plan.hostname_len;
  h.cwd = w.str(plan.cwd);
  h.candidates = w.strings(plan.exec_candidates);
  h.argv = w.strings(plan.argv);
  h.envp = w.strings(plan.envp);

  const Privileges& p = plan.privileges;
  h.uid = p.uid;
  h.gid = p.gid;
  h.n_groups = static_cast<uint32_t>(p.groups.size());
  h.groups = w.array(p.groups);
  h.n_filter = static_cast<uint32_t>(p.seccomp_filter.size());
  h.filter = w.array(p.seccomp_filter);
  h.n_rlimits = static_cast<uint32_t>(p.rlimits.size());
  h.rlimits = w.array(p.rlimits);
  h.bounding = p.bounding;
  h.effective = p.effective;
  return w.finish(h);
}

}  // namespace fnexec::sandbox::detail
