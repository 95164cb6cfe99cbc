#include "net/nft_elements.h"

#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <netlink/attr.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <sys/socket.h>

#include <cstring>
#include <ctime>

namespace fnexec::net {

namespace {

struct MsgFree {
  void operator()(nl_msg* m) const { nlmsg_free(m); }
};
using MsgPtr = std::unique_ptr<nl_msg, MsgFree>;

constexpr const char* kTable = "fnexec";

// One nfnetlink message: the netlink header and nfgenmsg (family, version, resource id).
MsgPtr nf_message(uint16_t type, uint16_t flags, uint8_t family, uint16_t res_id, uint32_t seq) {
  MsgPtr m(nlmsg_alloc_simple(type, flags));
  if (!m) return m;
  nlmsg_hdr(m.get())->nlmsg_seq = seq;
  nfgenmsg g{};
  g.nfgen_family = family;
  g.version = NFNETLINK_V0;
  g.res_id = htons(res_id);
  if (nlmsg_append(m.get(), &g, sizeof g, NLMSG_ALIGNTO) < 0) m.reset();
  return m;
}

// NFTA_SET_ELEM_LIST_* of one element: its key and, for an add, the verdict `jump CHAIN`.
bool put_element(nl_msg* m, const MapElement& e, bool with_verdict) {
  if (nla_put_string(m, NFTA_SET_ELEM_LIST_TABLE, kTable) < 0 ||
      nla_put_string(m, NFTA_SET_ELEM_LIST_SET, e.map.c_str()) < 0)
    return false;
  nlattr* list = nla_nest_start(m, NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED);
  nlattr* elem = list ? nla_nest_start(m, NFTA_LIST_ELEM | NLA_F_NESTED) : nullptr;
  nlattr* key = elem ? nla_nest_start(m, NFTA_SET_ELEM_KEY | NLA_F_NESTED) : nullptr;
  if (!key || nla_put(m, NFTA_DATA_VALUE, static_cast<int>(e.key.size()), e.key.data()) < 0) return false;
  nla_nest_end(m, key);
  if (with_verdict) {
    nlattr* data = nla_nest_start(m, NFTA_SET_ELEM_DATA | NLA_F_NESTED);
    nlattr* verdict = data ? nla_nest_start(m, NFTA_DATA_VERDICT | NLA_F_NESTED) : nullptr;
    // The verdict code is a big-endian u32 (nf_tables' NLA_U32 attributes are all network order).
    if (!verdict || nla_put_u32(m, NFTA_VERDICT_CODE, htonl(static_cast<uint32_t>(NFT_JUMP))) < 0 ||
        nla_put_string(m, NFTA_VERDICT_CHAIN, e.jump_chain.c_str()) < 0)
      return false;
    nla_nest_end(m, verdict);
    nla_nest_end(m, data);
  }
  nla_nest_end(m, elem);
  nla_nest_end(m, list);
  return true;
}

void append(std::vector<uint8_t>& batch, nl_msg* m) {
  nlmsghdr* h = nlmsg_hdr(m);
  auto* p = reinterpret_cast<const uint8_t*>(h);
  batch.insert(batch.end(), p, p + NLMSG_ALIGN(h->nlmsg_len));
}

}  // namespace

Result<NftElements> NftElements::connect() {
  auto sock = connect_netlink(NETLINK_NETFILTER, "nfnetlink socket");
  if (!sock) return std::unexpected(sock.error());
  NftElements n(std::move(*sock));
  n.seq_ = static_cast<uint32_t>(::time(nullptr));
  return n;
}

Result<> NftElements::add(const std::vector<MapElement>& elements) {
  return transact(NFT_MSG_NEWSETELEM, elements);
}

Result<> NftElements::remove(const std::vector<MapElement>& elements) {
  return transact(NFT_MSG_DELSETELEM, elements);
}

Result<> NftElements::transact(int message_type, const std::vector<MapElement>& elements) {
  if (elements.empty()) return {};
  bool adding = message_type == NFT_MSG_NEWSETELEM;
  std::vector<uint8_t> batch;
  uint32_t first = ++seq_;
  auto begin = nf_message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, AF_UNSPEC, NFNL_SUBSYS_NFTABLES, first);
  if (!begin) return fail(ErrorKind::internal, "allocate nfnetlink message");
  append(batch, begin.get());
  for (const auto& e : elements) {
    uint16_t flags = NLM_F_REQUEST | NLM_F_ACK | (adding ? NLM_F_CREATE : 0);
    auto m = nf_message(static_cast<uint16_t>((NFNL_SUBSYS_NFTABLES << 8) | message_type), flags, NFPROTO_INET, 0,
                        ++seq_);
    if (!m || !put_element(m.get(), e, adding)) return fail(ErrorKind::internal, "build nftables element message");
    append(batch, m.get());
  }
  auto end = nf_message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, AF_UNSPEC, NFNL_SUBSYS_NFTABLES, ++seq_);
  if (!end) return fail(ErrorKind::internal, "allocate nfnetlink message");
  append(batch, end.get());

  const char* what = adding ? "add nftables map element" : "remove nftables map element";
  int fd = nl_socket_get_fd(sock_.get());
  if (nl_sendto(sock_.get(), batch.data(), batch.size()) < 0) return fail_errno(what, elements.front().map);
  // Every element message asked for an ack: one NLMSG_ERROR each, 0 or the errno.
  size_t answers = 0;
  int first_error = 0;
  alignas(nlmsghdr) char buf[8192];
  while (answers < elements.size()) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno(what, elements.front().map);
    }
    int len = static_cast<int>(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_type != NLMSG_ERROR || h->nlmsg_seq < first || h->nlmsg_seq > seq_) continue;
      int err = -reinterpret_cast<nlmsgerr*>(NLMSG_DATA(h))->error;
      if (err != 0 && first_error == 0) first_error = err;
      // The batch's begin or end refused (no nf_tables in this kernel): no element is answered.
      if (h->nlmsg_seq == first || h->nlmsg_seq == seq_) answers = elements.size();
      else ++answers;
    }
  }
  if (first_error == 0) return {};
  auto e = fail_errno(what, "inet fnexec " + elements.front().map, first_error);
  if (first_error == EOPNOTSUPP || first_error == EPROTONOSUPPORT) e.error().kind = ErrorKind::unavailable;
  return e;
}

}  // namespace fnexec::net
