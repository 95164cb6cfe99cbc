// Address leases of one bridge: a file per address under STATE_DIR/BRIDGE/, flock'ed by its owner
// for as long as the owner lives. A lease file nobody holds locked belongs to a dead fnexec
// (the kernel drops a flock with its last fd), so whatever it stood for may be cleaned.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>

#include "net/address.h"
#include "util/error.h"
#include "util/unique_fd.h"

namespace fnexec::net {

// The bridge's setup lock: setup, clean-up and teardown of one bridge run one at a time across
// processes, which keeps lease allocation and the shared nftables chains race-free.
class BridgeLock {
 public:
  static Result<BridgeLock> acquire(const std::filesystem::path& dir);

 private:
  explicit BridgeLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

class Lease {
 public:
  // Under the BridgeLock: the next free address of subnet after the gateway (subnet's first
  // address), going round from where the last lease stopped. Stale leases met on the way are
  // handed to clean first and then reused.
  static Result<Lease> take(const std::filesystem::path& dir, const Ipv4Net& subnet,
                            const std::function<Result<>(uint32_t stale_address)>& clean);
  Lease(Lease&& o) noexcept
      : path_(std::move(o.path_)), fd_(std::move(o.fd_)), address_(o.address_), keep_(o.keep_) {}
  Lease& operator=(Lease&&) = delete;
  ~Lease();  // unlinks the file, then the flock goes with the fd

  uint32_t address() const { return address_; }
  // Leaves the file for the next setup's clean-up (ours failed); the flock still goes.
  void keep_file() { keep_ = true; }

 private:
  Lease(std::filesystem::path path, UniqueFd fd, uint32_t address)
      : path_(std::move(path)), fd_(std::move(fd)), address_(address) {}
  std::filesystem::path path_;
  UniqueFd fd_;
  uint32_t address_ = 0;
  bool keep_ = false;
};

// Under the BridgeLock: calls clean for every lease of a dead owner and removes its file.
Result<> clean_stale_leases(const std::filesystem::path& dir, const std::function<Result<>(uint32_t)>& clean);

}  // namespace fnexec::net
