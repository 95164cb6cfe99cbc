// Device policy: the default allowlist, its v1 devices-controller form and its v2 BPF program.
#include "cgroup/devices.h"

#include <fcntl.h>
#include <linux/bpf.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <filesystem>

#include "util/fs.h"
#include "util/unique_fd.h"

namespace fnexec::cgroup {

namespace {

// 1:3 null, 1:5 zero, 1:7 full, 1:8 random, 1:9 urandom, 5:0 tty, 5:2 ptmx, 136:* the pts slaves.
const std::array<DeviceRule, 8> kDefaultRules = {{
    {'c', 1, 3, "rwm"},
    {'c', 1, 5, "rwm"},
    {'c', 1, 7, "rwm"},
    {'c', 1, 8, "rwm"},
    {'c', 1, 9, "rwm"},
    {'c', 5, 0, "rwm"},
    {'c', 5, 2, "rwm"},
    {'c', 136, -1, "rwm"},
}};

Result<> check_rule(const DeviceRule& r) {
  bool access_ok = !r.access.empty() && r.access.find_first_not_of("rwm") == std::string::npos;
  if ((r.type != 'c' && r.type != 'b') || !access_ok || r.major < -1 || r.minor < -1 ||
      r.major > INT32_MAX || r.minor > INT32_MAX)
    return fail(ErrorKind::invalid, "use device rule", to_string(r),
                "expected type c or b, numbers or *, and access of r, w and m");
  return {};
}

uint32_t access_bits(std::string_view access) {
  uint32_t bits = 0;
  if (access.find('m') != std::string_view::npos) bits |= BPF_DEVCG_ACC_MKNOD;
  if (access.find('r') != std::string_view::npos) bits |= BPF_DEVCG_ACC_READ;
  if (access.find('w') != std::string_view::npos) bits |= BPF_DEVCG_ACC_WRITE;
  return bits;
}

constexpr int16_t kToNextRule = INT16_MIN;  // placeholder offset, patched when the rule's block is done

bpf_insn insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
  bpf_insn i{};
  i.code = code;
  i.dst_reg = dst & 0xf;
  i.src_reg = src & 0xf;
  i.off = off;
  i.imm = imm;
  return i;
}
bpf_insn load_u32(uint8_t dst, int16_t offset) { return insn(BPF_LDX | BPF_MEM | BPF_W, dst, BPF_REG_1, offset, 0); }
bpf_insn mov_reg(uint8_t dst, uint8_t src) { return insn(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0); }
bpf_insn mov_imm(uint8_t dst, int32_t imm) { return insn(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm); }
bpf_insn alu_imm(uint8_t op, uint8_t dst, int32_t imm) { return insn(BPF_ALU64 | op | BPF_K, dst, 0, 0, imm); }
bpf_insn skip_rule_unless(uint8_t reg, int32_t imm) { return insn(BPF_JMP | BPF_JNE | BPF_K, reg, 0, kToNextRule, imm); }
bpf_insn exit_insn() { return insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0); }

// The program, in the order the kernel's bpf_cgroup_dev_ctx lays out its fields:
//   r2 = type (low 16 bits of access_type), r3 = access (high 16), r4 = major, r5 = minor;
//   per rule: every field that does not match jumps to the next rule; a full match returns 1 (allow);
//   after the last rule, 0 (deny: EPERM to mknod and open).
std::vector<bpf_insn> device_program(std::span<const DeviceRule> rules) {
  std::vector<bpf_insn> p = {
      load_u32(BPF_REG_2, offsetof(bpf_cgroup_dev_ctx, access_type)),
      mov_reg(BPF_REG_3, BPF_REG_2),
      alu_imm(BPF_AND, BPF_REG_2, 0xffff),
      alu_imm(BPF_RSH, BPF_REG_3, 16),
      load_u32(BPF_REG_4, offsetof(bpf_cgroup_dev_ctx, major)),
      load_u32(BPF_REG_5, offsetof(bpf_cgroup_dev_ctx, minor)),
  };
  for (const auto& r : rules) {
    size_t start = p.size();
    p.push_back(skip_rule_unless(BPF_REG_2, r.type == 'b' ? BPF_DEVCG_DEV_BLOCK : BPF_DEVCG_DEV_CHAR));
    uint32_t allowed = access_bits(r.access);
    if (allowed != (BPF_DEVCG_ACC_MKNOD | BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE)) {
      // Any requested bit outside the rule's access: not this rule.
      p.push_back(mov_reg(BPF_REG_6, BPF_REG_3));
      p.push_back(alu_imm(BPF_AND, BPF_REG_6, static_cast<int32_t>(~allowed)));
      p.push_back(skip_rule_unless(BPF_REG_6, 0));
    }
    if (r.major >= 0) p.push_back(skip_rule_unless(BPF_REG_4, static_cast<int32_t>(r.major)));
    if (r.minor >= 0) p.push_back(skip_rule_unless(BPF_REG_5, static_cast<int32_t>(r.minor)));
    p.push_back(mov_imm(BPF_REG_0, 1));
    p.push_back(exit_insn());
    for (size_t i = start; i < p.size(); ++i)
      if (p[i].off == kToNextRule) p[i].off = static_cast<int16_t>(p.size() - i - 1);
  }
  p.push_back(mov_imm(BPF_REG_0, 0));
  p.push_back(exit_insn());
  return p;
}

long bpf(int cmd, bpf_attr& attr) { return ::syscall(SYS_bpf, cmd, &attr, sizeof attr); }

}  // namespace

std::span<const DeviceRule> default_device_rules() { return kDefaultRules; }

std::string to_string(const DeviceRule& r) {
  auto num = [](int64_t n) { return n < 0 ? std::string("*") : std::to_string(n); };
  return std::string(1, r.type) + " " + num(r.major) + ":" + num(r.minor) + " " + r.access;
}

Result<DeviceRule> device_rule_for(const std::string& path, std::string access) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return fail_errno("use device", path);
  if (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode))
    return fail(ErrorKind::invalid, "use device", path, "not a character or block device node");
  DeviceRule r{S_ISBLK(st.st_mode) ? 'b' : 'c', major(st.st_rdev), minor(st.st_rdev), std::move(access)};
  FNEXEC_TRY(check_rule(r));
  return r;
}

Result<UniqueFd> load_device_program(std::span<const DeviceRule> rules) {
  for (const auto& r : rules) FNEXEC_TRY(check_rule(r));
  auto program = device_program(rules);
  static const char kLicense[] = "GPL";
  bpf_attr attr{};
  attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
  attr.insns = reinterpret_cast<uintptr_t>(program.data());
  attr.insn_cnt = static_cast<uint32_t>(program.size());
  attr.license = reinterpret_cast<uintptr_t>(kLicense);
  UniqueFd fd(static_cast<int>(bpf(BPF_PROG_LOAD, attr)));
  if (fd) return fd;
  int err = errno;
  // Again with the verifier's log, so a rejected program says why.
  std::string log(16384, '\0');
  attr.log_level = 1;
  attr.log_buf = reinterpret_cast<uintptr_t>(log.data());
  attr.log_size = static_cast<uint32_t>(log.size());
  UniqueFd retry(static_cast<int>(bpf(BPF_PROG_LOAD, attr)));
  if (retry) return retry;
  log.resize(std::strlen(log.c_str()));
  auto e = fail_errno("load the cgroup device program (BPF_PROG_TYPE_CGROUP_DEVICE)",
                      std::to_string(rules.size()) + " rules", err);
  e.error().kind = ErrorKind::unavailable;
  e.error().detail = log.empty() ? "the kernel needs CONFIG_CGROUP_BPF and fnexec needs CAP_BPF or CAP_SYS_ADMIN"
                                 : "verifier: " + log.substr(log.size() > 400 ? log.size() - 400 : 0);
  return e;
}

Result<> attach_device_program(int cgroup_fd, int program_fd, const std::string& cgroup_path) {
  bpf_attr attr{};
  attr.target_fd = static_cast<uint32_t>(cgroup_fd);
  attr.attach_bpf_fd = static_cast<uint32_t>(program_fd);
  attr.attach_type = BPF_CGROUP_DEVICE;
  attr.attach_flags = BPF_F_ALLOW_MULTI;
  if (bpf(BPF_PROG_ATTACH, attr) != 0) return fail_errno("attach the device program to cgroup", cgroup_path);
  return {};
}

Result<> write_v1_device_rules(const std::string& dir, std::span<const DeviceRule> rules) {
  std::filesystem::path d(dir);
  // "a" empties the exception list and makes deny the default; only then do allows narrow it.
  FNEXEC_TRY(fs::write_file(d / "devices.deny", "a"));
  // One rule per write(2), all through one open file: opening devices.allow per rule was 8 of the
  // 9 opens of a sandbox's device policy.
  auto allow = d / "devices.allow";
  UniqueFd fd(::open(allow.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return fail_errno("open", allow.string());
  for (const auto& r : rules) {
    FNEXEC_TRY(check_rule(r));
    FNEXEC_TRY(fs::write_command(fd.get(), to_string(r), allow.string()));
  }
  return {};
}

}  // namespace fnexec::cgroup
