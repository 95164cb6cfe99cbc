// nftables through libnftables: commands in nft's own syntax, run as one atomic transaction each.
// fnexec only ever touches its own table, `inet fnexec`.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "util/error.h"

struct nft_ctx;

namespace fnexec::net {

class Nft {
 public:
  static Result<Nft> open();
  // Runs commands (several lines are one transaction); returns what nft printed (list commands).
  Result<std::string> run(std::string_view commands);

 private:
  struct Free {
    void operator()(nft_ctx* c) const;
  };
  explicit Nft(nft_ctx* c) : ctx_(c) {}
  std::unique_ptr<nft_ctx, Free> ctx_;
};

}  // namespace fnexec::net
