// Elements of fnexec's nftables verdict maps (sandbox address → its egress chain), written as raw
// nfnetlink batches: one round trip per sandbox, where a libnftables command loads the library
// and the table's cache first (3.7 + 5.8 ms of a cold `fnexec run` measured). The maps and chains
// themselves are made through libnftables (net/nft.h); only their elements go this way.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "net/netlink_socket.h"
#include "util/error.h"

namespace fnexec::net {

struct MapElement {
  std::string map;                 // in table inet fnexec
  std::vector<uint8_t> key;        // an address in network byte order (4 or 16 bytes)
  std::string jump_chain;          // the verdict: jump to this chain (unused by remove)
};

class NftElements {
 public:
  static Result<NftElements> connect();
  // Adds every element in one transaction. A missing table, map or chain fails with not_found.
  Result<> add(const std::vector<MapElement>& elements);
  // Removes the elements in one transaction; not_found when one of them (or its map) is missing,
  // in which case none is removed.
  Result<> remove(const std::vector<MapElement>& elements);

 private:
  explicit NftElements(NlSocket sock) : sock_(std::move(sock)) {}
  Result<> transact(int message_type, const std::vector<MapElement>& elements);
  NlSocket sock_;
  uint32_t seq_ = 0;
};

}  // namespace fnexec::net
