#include "net/nft.h"

#include <nftables/libnftables.h>

namespace fnexec::net {

void Nft::Free::operator()(nft_ctx* c) const {
  nft_ctx_free(c);
}

Result<Nft> Nft::open() {
  nft_ctx* c = nft_ctx_new(NFT_CTX_DEFAULT);
  if (!c)
    return fail(ErrorKind::unavailable, "create nftables context", {}, "libnftables failed to initialise");
  Nft n(c);
  // Buffered, so errors become the Error's detail instead of going to our stderr.
  if (nft_ctx_buffer_output(c) != 0 || nft_ctx_buffer_error(c) != 0)
    return fail(ErrorKind::internal, "buffer nftables output");
  return n;
}

Result<std::string> Nft::run(std::string_view commands) {
  std::string cmd(commands);
  int rc = nft_run_cmd_from_buffer(ctx_.get(), cmd.c_str());
  std::string out = nft_ctx_get_output_buffer(ctx_.get());
  std::string err = nft_ctx_get_error_buffer(ctx_.get());
  if (rc == 0) return out;
  while (!err.empty() && err.back() == '\n') err.pop_back();
  ErrorKind kind = ErrorKind::internal;
  if (err.find("No such file or directory") != std::string::npos)
    kind = ErrorKind::not_found;
  else if (err.find("File exists") != std::string::npos)
    kind = ErrorKind::exists;
  else if (err.find("Operation not supported") != std::string::npos ||
           err.find("Protocol not supported") != std::string::npos)
    kind = ErrorKind::unavailable;
  auto first_line = cmd.substr(0, cmd.find('\n'));
  return fail(kind, "run nftables command", first_line,
              kind == ErrorKind::unavailable
                  ? err +
                        " (is the nf_tables kernel module available? iptables-legacy "
                        "hosts are not supported)"
                  : err);
}

}  // namespace fnexec::net
