#include "image/isal_gzip.h"

#include <dlfcn.h>
#include <isa-l/igzip_lib.h>

#include <cstdlib>
#include <vector>

#include "util/dynamic_library.h"

namespace fnexec::image {

namespace {

struct IsalApi {
  decltype(&isal_inflate_init) init = nullptr;
  decltype(&isal_inflate_reset) reset = nullptr;
  decltype(&isal_inflate) inflate = nullptr;
};

const IsalApi* isal_api() {
  static const IsalApi* api = [] () -> const IsalApi* {
    if (const char* off = std::getenv("FNEXEC_NO_ISAL"); off && *off) return nullptr;
    void* lib = util::open_private_library("libisal.so.2");
    if (!lib) return nullptr;
    static IsalApi a;
    if (!util::resolve_symbol(lib, "isal_inflate_init", a.init) || !util::resolve_symbol(lib, "isal_inflate_reset", a.reset) ||
        !util::resolve_symbol(lib, "isal_inflate", a.inflate))
      return nullptr;
    return &a;
  }();
  return api;
}

constexpr size_t kOutputBlock = 1 << 20;

const char* isal_error(int rc) {
  switch (rc) {
    case ISAL_INVALID_BLOCK: return "invalid deflate block";
    case ISAL_INVALID_SYMBOL: return "invalid deflate symbol";
    case ISAL_INVALID_LOOKBACK: return "invalid deflate distance";
    case ISAL_INVALID_WRAPPER: return "not a gzip header";
    case ISAL_UNSUPPORTED_METHOD: return "gzip member with a compression method other than deflate";
    case ISAL_INCORRECT_CHECKSUM: return "gzip CRC32 does not match";
    case ISAL_NEED_DICT: return "deflate stream needs a preset dictionary";
    default: return "gzip data error";
  }
}

}  // namespace

struct IsalGzip::State {
  const IsalApi* api;
  inflate_state st{};
  std::vector<unsigned char> out;  // next()'s output, allocated on its first call: next_into() writes into the caller's
  bool input_done = false;
  bool finished = false;
  bool output_full = false;  // the last call filled the output: igzip may hold more without new input
};

std::unique_ptr<IsalGzip> IsalGzip::make() {
  const IsalApi* api = isal_api();
  if (!api) return nullptr;
  auto s = std::make_unique<State>();
  s->api = api;
  api->init(&s->st);
  s->st.crc_flag = ISAL_GZIP;  // parse the header, verify CRC32 and size in the trailer
  return std::unique_ptr<IsalGzip>(new IsalGzip(std::move(s)));
}

IsalGzip::IsalGzip(std::unique_ptr<State> state) : state_(std::move(state)) {}
IsalGzip::~IsalGzip() = default;

Result<std::span<const unsigned char>> IsalGzip::next(const Input& input) {
  if (state_->out.empty()) state_->out.resize(kOutputBlock);
  size_t produced = FNEXEC_TRY(next_into(input, state_->out));
  return std::span<const unsigned char>(state_->out.data(), produced);
}

Result<size_t> IsalGzip::next_into(const Input& input, std::span<unsigned char> out) {
  State& s = *state_;
  auto& st = s.st;
  auto refill = [&]() -> Result<bool> {
    if (s.input_done) return false;
    auto block = FNEXEC_TRY(input());
    if (block.empty()) {
      s.input_done = true;
      return false;
    }
    st.next_in = const_cast<unsigned char*>(block.data());
    st.avail_in = static_cast<uint32_t>(block.size());
    return true;
  };
  while (!s.finished) {
    if (st.block_state == ISAL_BLOCK_FINISH) {
      // One member ended (its trailer verified). Another one may follow, as gzip(1) allows.
      if (st.avail_in == 0 && !FNEXEC_TRY(refill())) {
        s.finished = true;
        break;
      }
      bool another = st.next_in[0] == 0x1f && (st.avail_in < 2 || st.next_in[1] == 0x8b);
      if (!another) {  // trailing bytes: hashed by the caller, not decompressed (as libarchive)
        s.finished = true;
        break;
      }
      unsigned char* in = st.next_in;
      uint32_t avail = st.avail_in;
      s.api->reset(&st);
      st.crc_flag = ISAL_GZIP;
      st.next_in = in;
      st.avail_in = avail;
    }
    if (st.avail_in == 0 && !s.output_full && !FNEXEC_TRY(refill()))
      return fail(ErrorKind::corrupt, "decompress layer", {}, "the gzip stream ends early (truncated blob)");
    st.next_out = out.data();
    st.avail_out = static_cast<uint32_t>(out.size());
    int rc = s.api->inflate(&st);
    if (rc < 0) return fail(ErrorKind::corrupt, "decompress layer", {}, isal_error(rc));
    size_t produced = out.size() - st.avail_out;
    s.output_full = st.avail_out == 0;
    if (produced) return produced;
  }
  return size_t{0};
}

}  // namespace fnexec::image
