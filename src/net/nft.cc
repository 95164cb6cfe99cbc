#include "net/nft.h"

#include <dlfcn.h>
#include <nftables/libnftables.h>

#include "util/dynamic_library.h"

namespace fnexec::net {

namespace {

// libnftables and the five libraries it pulls in are loaded on first use, not at every start:
// Debian ships no static archive, and mapping six more shared objects would slow every cold
// `fnexec run`, with or without a network.
struct NftApi {
  decltype(&nft_ctx_new) ctx_new = nullptr;
  decltype(&nft_ctx_free) ctx_free = nullptr;
  decltype(&nft_ctx_buffer_output) buffer_output = nullptr;
  decltype(&nft_ctx_buffer_error) buffer_error = nullptr;
  decltype(&nft_ctx_get_output_buffer) output_buffer = nullptr;
  decltype(&nft_ctx_get_error_buffer) error_buffer = nullptr;
  decltype(&nft_run_cmd_from_buffer) run_cmd = nullptr;
  std::string load_error;
};

using util::resolve_symbol;

const NftApi& api() {
  static const NftApi loaded = [] {
    NftApi a;
    void* lib = util::open_private_library("libnftables.so.1", &a.load_error);
    if (!lib) return a;
    if (!resolve_symbol(lib, "nft_ctx_new", a.ctx_new) || !resolve_symbol(lib, "nft_ctx_free", a.ctx_free) ||
        !resolve_symbol(lib, "nft_ctx_buffer_output", a.buffer_output) ||
        !resolve_symbol(lib, "nft_ctx_buffer_error", a.buffer_error) ||
        !resolve_symbol(lib, "nft_ctx_get_output_buffer", a.output_buffer) ||
        !resolve_symbol(lib, "nft_ctx_get_error_buffer", a.error_buffer) ||
        !resolve_symbol(lib, "nft_run_cmd_from_buffer", a.run_cmd)) {
      a.load_error = "a function is missing from libnftables.so.1";
      a.ctx_new = nullptr;
    }
    return a;
  }();
  return loaded;
}

}  // namespace

void Nft::Free::operator()(nft_ctx* c) const {
  api().ctx_free(c);
}

Result<Nft> Nft::open() {
  if (!api().ctx_new)
    return fail(ErrorKind::unavailable, "load libnftables", "libnftables.so.1",
                api().load_error + "; network mode bridge needs nftables: apt-get install libnftables1");
  nft_ctx* c = api().ctx_new(NFT_CTX_DEFAULT);
  if (!c)
    return fail(ErrorKind::unavailable, "create nftables context", {}, "libnftables failed to initialise");
  Nft n(c);
  // Buffered, so errors become the Error's detail instead of going to our stderr.
  if (api().buffer_output(c) != 0 || api().buffer_error(c) != 0)
    return fail(ErrorKind::internal, "buffer nftables output");
  return n;
}

Result<std::string> Nft::run(std::string_view commands) {
  std::string cmd(commands);
  int rc = api().run_cmd(ctx_.get(), cmd.c_str());
  std::string out = api().output_buffer(ctx_.get());
  std::string err = api().error_buffer(ctx_.get());
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
