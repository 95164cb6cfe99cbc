#include "image/unpack.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <sys/socket.h>

#include <array>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <utility>
#include <vector>

#include "image/isal_gzip.h"
#include "util/fs.h"
#include "util/syscalls.h"
#include "util/unique_fd.h"

namespace fnexec::image {

// ---------------------------------------------------------------------------------------------
// sha256

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
Sha256::~Sha256() { EVP_MD_CTX_free(ctx_); }
void Sha256::update(const void* data, size_t size) { EVP_DigestUpdate(ctx_, data, size); }

std::string Sha256::finish() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx_, md, &len);
  static constexpr char hex[] = "0123456789abcdef";
  std::string out = "sha256:";
  for (unsigned i = 0; i < len; ++i) {
    out += hex[md[i] >> 4];
    out += hex[md[i] & 15];
  }
  return out;
}

std::string sha256_of(std::string_view data) {
  Sha256 h;
  h.update(data.data(), data.size());
  return h.finish();
}

// ---------------------------------------------------------------------------------------------
// entry-name rules

Result<std::string> clean_entry_path(std::string_view name) {
  std::string out;
  size_t i = 0;
  while (i <= name.size()) {
    size_t j = name.find('/', i);
    if (j == std::string_view::npos) j = name.size();
    std::string_view part = name.substr(i, j - i);
    if (part == "..")
      return fail(ErrorKind::corrupt, "unpack entry", std::string(name), "\"..\" components are refused");
    if (!part.empty() && part != ".") {
      if (!out.empty()) out += '/';
      out += part;
    }
    i = j + 1;
  }
  if (out.find('\0') != std::string::npos)
    return fail(ErrorKind::corrupt, "unpack entry", std::string(name), "NUL in name");
  return out;
}

std::optional<std::string> resolve_lexically(std::string_view dir, std::string_view target) {
  std::vector<std::string_view> parts;
  for (std::string_view s : {dir, target}) {
    size_t i = 0;
    while (i <= s.size()) {
      size_t j = s.find('/', i);
      if (j == std::string_view::npos) j = s.size();
      std::string_view part = s.substr(i, j - i);
      if (part == "..") {
        if (parts.empty()) return std::nullopt;
        parts.pop_back();
      } else if (!part.empty() && part != ".") {
        parts.push_back(part);
      }
      i = j + 1;
    }
  }
  std::string out;
  for (auto p : parts) {
    if (!out.empty()) out += '/';
    out += p;
  }
  return out;
}

bool symlink_stays_inside(std::string_view link_path, std::string_view target) {
  if (target.starts_with('/')) return true;
  size_t slash = link_path.rfind('/');
  return resolve_lexically(slash == std::string_view::npos ? std::string_view{} : link_path.substr(0, slash), target)
      .has_value();
}

Whiteout classify_whiteout(std::string_view clean_path) {
  size_t slash = clean_path.rfind('/');
  std::string_view dir = slash == std::string_view::npos ? std::string_view{} : clean_path.substr(0, slash);
  std::string_view base = slash == std::string_view::npos ? clean_path : clean_path.substr(slash + 1);
  if (!base.starts_with(".wh.")) return {};
  if (base == ".wh..wh..opq") return {Whiteout::opaque, std::string(dir)};
  if (base.starts_with(".wh..wh.")) return {Whiteout::ignored, {}};
  std::string_view victim = base.substr(4);
  if (victim.empty() || victim == "." || victim == "..") return {Whiteout::ignored, {}};
  std::string path(dir);
  if (!path.empty()) path += '/';
  path += victim;
  return {Whiteout::remove, std::move(path)};
}

namespace {

constexpr size_t kReadBlock = 1 << 20;

std::string archive_message(struct archive* a) {
  const char* m = archive_error_string(a);
  return m ? m : "unknown libarchive error";
}

Error corrupt(std::string_view entry, std::string detail) {
  return Error{ErrorKind::corrupt, 0, "unpack entry", std::string(entry), std::move(detail)};
}

std::pair<std::string_view, std::string_view> split_parent(std::string_view path) {
  size_t slash = path.rfind('/');
  if (slash == std::string_view::npos) return {{}, path};
  return {path.substr(0, slash), path.substr(slash + 1)};
}

// ---------------------------------------------------------------------------------------------
// The two streams: compressed bytes from the blob fd, decompressed bytes from the outer reader.

struct CompressedInput {
  int fd = -1;
  BlockPipe* pipe = nullptr;  // instead of fd: blocks its producer already hashed and copied
  int copy_fd = -1;
  std::optional<fs::SequentialWriteback> copy_writeback;  // of copy_fd
  int64_t expected_size = -1;
  const std::function<void(uint64_t)>* progress = nullptr;
  Sha256 hash;
  uint64_t total = 0;
  uint64_t next_progress = 0;
  std::vector<char> buf;  // for reads from fd; a pipe hands out its own blocks
  const char* data = nullptr;  // the block the last pull() handed out
  size_t held = 0;      // bytes at data from primed(), handed out by the next pull()
  std::optional<Error> error;

  // Reads the first bytes (at least 4, or the whole blob if shorter) so the compression can be told
  // from its magic before a decompressor is chosen; the next pull() hands them out again. A pipe's
  // blocks are full but for the last, so its first block is enough.
  Result<std::span<const char>> primed() {
    if (pipe) {
      held = FNEXEC_TRY(read_block(0));
      return std::span<const char>(data, held);
    }
    while (held < 4) {
      ssize_t n = FNEXEC_TRY(read_block(held));
      if (n == 0) break;
      held += static_cast<size_t>(n);
    }
    return std::span<const char>(buf.data(), held);
  }

  // Reads one block: hashed, copied, counted. 0 at the end of the blob.
  Result<size_t> pull() {
    if (held) return std::exchange(held, 0);
    return read_block(0);
  }

 private:
  Result<size_t> read_block(size_t at) {
    size_t n = 0;
    if (pipe) {
      auto block = pipe->next();
      if (block.empty() && pipe->error()) return std::unexpected(*pipe->error());
      data = reinterpret_cast<const char*>(block.data());
      n = block.size();
      FNEXEC_TRY(count(n));
    } else {
      ssize_t r;
      char* into = buf.data() + at;
      do r = ::read(fd, into, buf.size() - at);
      while (r < 0 && errno == EINTR);
      if (r < 0) return fail_errno("read layer blob");
      n = static_cast<size_t>(r);
      FNEXEC_TRY(count(n));
      hash.update(into, n);
      for (size_t done = 0; copy_fd >= 0 && done < n;) {
        ssize_t w = ::write(copy_fd, into + done, n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return fail_errno("write blob copy");
        done += static_cast<size_t>(w);
      }
      if (copy_writeback && n > 0) copy_writeback->wrote(n);
      if (copy_writeback && n == 0) copy_writeback->finish();
    }
    if (progress && *progress && total >= next_progress) {
      (*progress)(total);
      next_progress = total + (4 << 20);
    }
    return n;
  }

  Result<> count(size_t n) {
    total += n;
    if (expected_size >= 0 && total > static_cast<uint64_t>(expected_size))
      return fail(ErrorKind::corrupt, "verify layer blob", {},
                  "longer than the " + std::to_string(expected_size) + " bytes its descriptor says");
    return {};
  }
};

la_ssize_t compressed_read(struct archive* a, void* ctx, const void** out) {
  auto* in = static_cast<CompressedInput*>(ctx);
  auto n = in->pull();
  if (!n) {
    in->error = n.error();
    archive_set_error(a, EIO, "%s", n.error().message().c_str());
    return -1;
  }
  *out = in->data;
  return static_cast<la_ssize_t>(*n);
}

// Decompressed bytes, written into the caller's blocks: ISA-L inflates straight into them,
// libarchive's filters (zstd, plain, gzip without ISA-L) are copied from its own buffer.
struct Decompressor {
  struct archive* outer = nullptr;       // libarchive's decompression, or
  IsalGzip* gzip = nullptr;              // ISA-L's for gzip, reading from
  CompressedInput* compressed = nullptr;
  uint64_t total = 0;
  uint64_t limit = 0;  // 0: none
  const std::string* limit_setting = nullptr;
  bool eof = false;
  const char* held = nullptr;  // what libarchive gave and did not fit into the last block
  size_t held_size = 0;

  // Fills out with the next decompressed bytes; 0 at the end of the stream.
  Result<size_t> fill(std::span<unsigned char> out) {
    size_t n = 0;
    while (n == 0 && !eof) {
      if (gzip) {
        n = FNEXEC_TRY(gzip->next_into(
            [this]() -> Result<std::span<const unsigned char>> {
              size_t got = FNEXEC_TRY(compressed->pull());
              return std::span(reinterpret_cast<const unsigned char*>(compressed->data), got);
            },
            out));
        if (n == 0) eof = true;
        continue;
      }
      if (held_size == 0) {
        const void* buf = nullptr;
        la_int64_t offset = 0;
        int r = archive_read_data_block(outer, &buf, &held_size, &offset);
        if (r == ARCHIVE_EOF) {
          eof = true;
          held_size = 0;
          continue;
        }
        if (r < ARCHIVE_WARN) return fail(ErrorKind::corrupt, "decompress layer", {}, archive_message(outer));
        held = static_cast<const char*>(buf);
      }
      n = std::min(held_size, out.size());
      std::memcpy(out.data(), held, n);
      held += n;
      held_size -= n;
    }
    total += n;
    if (limit && total > limit)
      return fail(ErrorKind::too_large, "unpack layer", {},
                  "it unpacks to more than " + std::to_string(limit) + " bytes (" + *limit_setting + ")");
    return n;
  }
};

// The tar thread's side: blocks from the pipe, hashed into the diff_id as they pass.
struct TarInput {
  BlockPipe* pipe = nullptr;
  Sha256 hash;
  std::optional<Error> error;  // the producer's, once the stream reached it

  std::span<const unsigned char> pull() {
    auto block = pipe->next();
    if (block.empty()) {
      if (pipe->error()) error = *pipe->error();
      return block;
    }
    hash.update(block.data(), block.size());
    return block;
  }
};

la_ssize_t tar_read(struct archive* a, void* ctx, const void** out) {
  auto* in = static_cast<TarInput*>(ctx);
  auto block = in->pull();
  if (in->error) {
    archive_set_error(a, EIO, "%s", in->error->message().c_str());
    return -1;
  }
  *out = block.data();
  return static_cast<la_ssize_t>(block.size());
}

struct ArchiveFree {
  void operator()(struct archive* a) const { archive_read_free(a); }
};
using ArchivePtr = std::unique_ptr<struct archive, ArchiveFree>;

// ---------------------------------------------------------------------------------------------
// Writing entries below one directory fd; every path is resolved with openat2 so that nothing
// (symlink, "..", mount crossing) can lead outside the layer.

class LayerWriter {
 public:
  LayerWriter(UniqueFd root, bool allow_devices) : root_(std::move(root)), allow_devices_(allow_devices) {}

  Result<> write(struct archive* tar, struct archive_entry* e);
  Result<> finish();
  uint64_t device_nodes() const { return device_nodes_; }
  uint64_t device_nodes_skipped() const { return device_nodes_skipped_; }

 private:
  Result<UniqueFd> open_dir(std::string_view rel, bool create);
  Result<int> parent(std::string_view dir);
  Result<> make_room(int pfd, std::string_view base, std::string_view path, bool keep_dir);
  Result<> set_owner_mode(int fd, struct archive_entry* e, std::string_view path);
  Result<> set_xattrs(int fd, struct archive_entry* e, std::string_view path);
  Result<> set_link_times(int pfd, std::string_view base, struct archive_entry* e, std::string_view path);
  Result<> write_file(struct archive* tar, struct archive_entry* e, int pfd, std::string_view base,
                      std::string_view path);
  Result<> write_dir(struct archive_entry* e, int pfd, std::string_view base, std::string_view path);

  UniqueFd root_;
  bool allow_devices_;
  uint64_t device_nodes_ = 0;
  uint64_t device_nodes_skipped_ = 0;
  std::string cached_dir_;
  UniqueFd cached_fd_;
  std::vector<std::pair<std::string, std::array<timespec, 2>>> dir_times_;
};

std::array<timespec, 2> entry_times(struct archive_entry* e) {
  std::array<timespec, 2> ts{};
  if (archive_entry_mtime_is_set(e)) {
    ts[1] = {archive_entry_mtime(e), archive_entry_mtime_nsec(e)};
  } else {
    ts[1].tv_nsec = UTIME_OMIT;
  }
  ts[0] = archive_entry_atime_is_set(e) ? timespec{archive_entry_atime(e), archive_entry_atime_nsec(e)} : ts[1];
  return ts;
}

Result<UniqueFd> LayerWriter::open_dir(std::string_view rel, bool create) {
  open_how how{};
  how.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;
  auto refuse = [&](int err) -> Result<UniqueFd> {
    if (err == ELOOP) return std::unexpected(corrupt(rel, "a path component is a symlink: writing through symlinks is refused"));
    if (err == ENOTDIR) return std::unexpected(corrupt(rel, "a path component is not a directory"));
    if (err == EXDEV) return std::unexpected(corrupt(rel, "path leaves the layer"));
    return fail_errno("open directory", std::string(rel), err);
  };
  std::string path(rel.empty() ? "." : rel);
  UniqueFd fd(sys::openat2(root_.get(), path.c_str(), &how, sizeof how));
  if (fd) return fd;
  if (errno != ENOENT || !create) return refuse(errno);
  // Parents missing from the archive are made 0755 root-owned, as tar and containers/storage do.
  UniqueFd cur(::fcntl(root_.get(), F_DUPFD_CLOEXEC, 0));
  if (!cur) return fail_errno("dup layer fd");
  size_t i = 0;
  while (i < path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    std::string part = path.substr(i, j - i);
    UniqueFd next(sys::openat2(cur.get(), part.c_str(), &how, sizeof how));
    if (!next && errno == ENOENT) {
      if (::mkdirat(cur.get(), part.c_str(), 0755) != 0 && errno != EEXIST)
        return fail_errno("create directory", path.substr(0, j));
      next.reset(sys::openat2(cur.get(), part.c_str(), &how, sizeof how));
      // mkdirat applies the process umask (0077 under a hardened service): the mode is set outright.
      if (next && ::fchmod(next.get(), 0755) != 0) return fail_errno("chmod", path.substr(0, j));
    }
    if (!next) return refuse(errno);
    cur = std::move(next);
    i = j + 1;
  }
  return cur;
}

Result<int> LayerWriter::parent(std::string_view dir) {
  if (!cached_fd_ || cached_dir_ != dir) {
    cached_fd_.reset();
    cached_fd_ = FNEXEC_TRY(open_dir(dir, true));
    cached_dir_ = dir;
  }
  return cached_fd_.get();
}

// A later entry replaces an earlier one of the same name (tar semantics), except that a
// directory over a directory only updates its metadata.
Result<> LayerWriter::make_room(int pfd, std::string_view base, std::string_view path, bool keep_dir) {
  std::string name(base);
  struct stat st;
  if (::fstatat(pfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return {};
    return fail_errno("stat", std::string(path));
  }
  if (S_ISDIR(st.st_mode)) {
    if (keep_dir) return {};
    if (::unlinkat(pfd, name.c_str(), AT_REMOVEDIR) != 0)
      return std::unexpected(corrupt(path, "replaces a non-empty directory of the same layer"));
    cached_fd_.reset();  // the cached parent may have been below it
    return {};
  }
  if (::unlinkat(pfd, name.c_str(), 0) != 0) return fail_errno("replace", std::string(path));
  return {};
}

Result<> LayerWriter::set_owner_mode(int fd, struct archive_entry* e, std::string_view path) {
  // chown first: it clears setuid/setgid, which the chmod after it restores.
  if (::fchown(fd, static_cast<uid_t>(archive_entry_uid(e)), static_cast<gid_t>(archive_entry_gid(e))) != 0)
    return fail_errno("chown", std::string(path));
  if (::fchmod(fd, archive_entry_perm(e) & 07777) != 0) return fail_errno("chmod", std::string(path));
  return {};
}

Result<> LayerWriter::set_xattrs(int fd, struct archive_entry* e, std::string_view path) {
  if (archive_entry_xattr_reset(e) == 0) return {};
  const char* name;
  const void* value;
  size_t size;
  while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
    std::string_view n(name);
    // Overlay's own attributes are written only by the whiteout conversion: a layer carrying
    // them could redirect or hide lower content behind overlay's back.
    if (n.starts_with("trusted.overlay.") || n.starts_with("user.overlay.")) continue;
    if (::fsetxattr(fd, name, value, size, 0) != 0 && errno != ENOTSUP)
      return fail_errno("set xattr " + std::string(n) + " on", std::string(path));
  }
  return {};
}

Result<> LayerWriter::set_link_times(int pfd, std::string_view base, struct archive_entry* e,
                                     std::string_view path) {
  std::string name(base);
  if (::fchownat(pfd, name.c_str(), static_cast<uid_t>(archive_entry_uid(e)),
                 static_cast<gid_t>(archive_entry_gid(e)), AT_SYMLINK_NOFOLLOW) != 0)
    return fail_errno("chown", std::string(path));
  auto ts = entry_times(e);
  if (::utimensat(pfd, name.c_str(), ts.data(), AT_SYMLINK_NOFOLLOW) != 0)
    return fail_errno("set times", std::string(path));
  return {};
}

Result<> LayerWriter::write_file(struct archive* tar, struct archive_entry* e, int pfd, std::string_view base,
                                 std::string_view path) {
  std::string name(base);
  UniqueFd fd(::openat(pfd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd && errno == EEXIST) {
    FNEXEC_TRY(make_room(pfd, base, path, false));
    fd.reset(::openat(pfd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  }
  if (!fd) return fail_errno("create", std::string(path));
  int64_t end = 0;
  // The store syncs before a layer goes in; started as the file grows, its writes overlap the rest
  // of the pull instead of waiting in that sync (a 90 MB node binary started only at its end kept
  // ~80 MB dirty through bench/pull.sh's pull and its last syncfs wrote them all).
  fs::SequentialWriteback writeback(fd.get());
  for (;;) {
    const void* buf;
    size_t size;
    la_int64_t offset;
    int r = archive_read_data_block(tar, &buf, &size, &offset);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) return std::unexpected(corrupt(path, archive_message(tar)));
    // pwrite at the block's offset keeps sparse files sparse.
    for (size_t done = 0; done < size;) {
      ssize_t w = ::pwrite(fd.get(), static_cast<const char*>(buf) + done, size - done,
                           offset + static_cast<off_t>(done));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return fail_errno("write", std::string(path));
      done += static_cast<size_t>(w);
    }
    end = offset + static_cast<int64_t>(size);
    writeback.written_to(static_cast<uint64_t>(end));
  }
  if (archive_entry_size(e) > end && ::ftruncate(fd.get(), archive_entry_size(e)) != 0)
    return fail_errno("extend", std::string(path));
  writeback.finish();
  FNEXEC_TRY(set_owner_mode(fd.get(), e, path));
  FNEXEC_TRY(set_xattrs(fd.get(), e, path));
  auto ts = entry_times(e);
  if (::futimens(fd.get(), ts.data()) != 0) return fail_errno("set times", std::string(path));
  return {};
}

Result<> LayerWriter::write_dir(struct archive_entry* e, int pfd, std::string_view base, std::string_view path) {
  UniqueFd fd;
  if (path.empty()) {
    fd.reset(::fcntl(root_.get(), F_DUPFD_CLOEXEC, 0));
  } else {
    FNEXEC_TRY(make_room(pfd, base, path, true));
    std::string name(base);
    if (::mkdirat(pfd, name.c_str(), 0700) != 0 && errno != EEXIST) return fail_errno("mkdir", std::string(path));
    fd.reset(::openat(pfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  }
  if (!fd) return fail_errno("open directory", std::string(path));
  FNEXEC_TRY(set_owner_mode(fd.get(), e, path));
  FNEXEC_TRY(set_xattrs(fd.get(), e, path));
  // Entries written into the directory later change its mtime, so times are set at the end.
  dir_times_.emplace_back(std::string(path), entry_times(e));
  return {};
}

Result<> LayerWriter::write(struct archive* tar, struct archive_entry* e) {
  const char* raw = archive_entry_pathname(e);
  if (!raw) return std::unexpected(corrupt("(unnamed)", "entry without a name"));
  std::string path = FNEXEC_TRY(clean_entry_path(raw));

  auto whiteout = classify_whiteout(path);
  if (whiteout.kind == Whiteout::ignored) return {};
  if (whiteout.kind == Whiteout::opaque) {
    auto dir = FNEXEC_TRY(open_dir(whiteout.path, true));
    if (::fsetxattr(dir.get(), "trusted.overlay.opaque", "y", 1, 0) != 0)
      return fail_errno("mark opaque", whiteout.path.empty() ? "/" : whiteout.path);
    return {};
  }
  if (whiteout.kind == Whiteout::remove) {
    auto [dir, base] = split_parent(whiteout.path);
    int pfd = FNEXEC_TRY(parent(dir));
    std::string name(base);
    // An entry of the same name in this layer stays: whiteouts only apply to lower layers.
    if (::mknodat(pfd, name.c_str(), S_IFCHR | 0, makedev(0, 0)) != 0 && errno != EEXIST)
      return fail_errno("create whiteout", whiteout.path);
    return {};
  }

  auto [dir, base] = split_parent(path);
  const char* hardlink = archive_entry_hardlink(e);
  if (hardlink) {
    std::string target = FNEXEC_TRY(clean_entry_path(hardlink));
    if (target.empty() || target == path) return std::unexpected(corrupt(path, "hardlink to itself or the root"));
    auto [tdir, tbase] = split_parent(target);
    auto tfd = open_dir(tdir, false);
    if (!tfd) {
      if (tfd.error().kind == ErrorKind::corrupt || tfd.error().kind == ErrorKind::not_found)
        return std::unexpected(corrupt(path, "hardlink target " + target + " is not a file of this layer"));
      return std::unexpected(tfd.error());
    }
    int pfd = FNEXEC_TRY(parent(dir));
    std::string tname(tbase), name(base);
    if (::linkat(tfd->get(), tname.c_str(), pfd, name.c_str(), 0) == 0) return {};
    int err = errno;
    if (err == EEXIST) {
      FNEXEC_TRY(make_room(pfd, base, path, false));
      if (::linkat(tfd->get(), tname.c_str(), pfd, name.c_str(), 0) == 0) return {};
      err = errno;
    }
    if (err == ENOENT || err == EPERM)
      return std::unexpected(corrupt(path, "hardlink target " + target + " is not a file of this layer"));
    return fail_errno("hardlink", path, err);
  }

  int pfd = path.empty() ? root_.get() : FNEXEC_TRY(parent(dir));
  std::string name(base);
  switch (archive_entry_filetype(e)) {
    case AE_IFREG:
      return write_file(tar, e, pfd, base, path);
    case AE_IFDIR:
      return write_dir(e, pfd, base, path);
    case AE_IFLNK: {
      const char* target = archive_entry_symlink(e);
      if (!target || !*target) return std::unexpected(corrupt(path, "symlink without a target"));
      if (!symlink_stays_inside(path, target))
        return std::unexpected(corrupt(path, std::string("symlink target ") + target + " climbs out of the layer"));
      FNEXEC_TRY(make_room(pfd, base, path, false));
      if (::symlinkat(target, pfd, name.c_str()) != 0) return fail_errno("symlink", path);
      return set_link_times(pfd, base, e, path);
    }
    case AE_IFCHR:
    case AE_IFBLK:
    case AE_IFIFO: {
      mode_t type = archive_entry_filetype(e);
      if (type != AE_IFIFO) {
        ++device_nodes_;
        // Root filesystems made by debootstrap carry /dev nodes; the sandbox mounts its own /dev over them.
        if (!allow_devices_) {
          ++device_nodes_skipped_;
          return {};
        }
      }
      FNEXEC_TRY(make_room(pfd, base, path, false));
      if (::mknodat(pfd, name.c_str(), type | 0600, archive_entry_rdev(e)) != 0) return fail_errno("mknod", path);
      FNEXEC_TRY(set_link_times(pfd, base, e, path));
      if (::fchmodat(pfd, name.c_str(), archive_entry_perm(e) & 07777, 0) != 0) return fail_errno("chmod", path);
      return {};
    }
    default:
      return std::unexpected(corrupt(path, "unsupported entry type (socket or unknown)"));
  }
}

Result<> LayerWriter::finish() {
  cached_fd_.reset();
  for (auto it = dir_times_.rbegin(); it != dir_times_.rend(); ++it) {
    if (it->second[1].tv_nsec == UTIME_OMIT) continue;
    auto fd = open_dir(it->first, false);
    if (!fd) continue;  // replaced by a later entry
    if (::futimens(fd->get(), it->second.data()) != 0) return fail_errno("set times", it->first);
  }
  return {};
}

}  // namespace

Result<std::string> blob_compression(int blob_fd) {
  unsigned char magic[4] = {};
  ssize_t n;
  do n = ::pread(blob_fd, magic, sizeof magic, 0);
  while (n < 0 && errno == EINTR);
  if (n < 0) return fail_errno("read layer blob");
  if (n >= 2 && magic[0] == 0x1f && magic[1] == 0x8b) return std::string("gzip");
  if (n == 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd) return std::string("zstd");
  return std::string("none");
}

namespace {

Result<LayerDigests> unpack(int blob_fd, BlockPipe* blob_pipe, std::optional<std::string_view> dest_dir,
                            const UnpackOptions& options) {
  std::optional<LayerWriter> writer;
  if (dest_dir) {
    std::string dir(*dest_dir);
    UniqueFd root(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!root) return fail_errno("open layer directory", dir);
    // mkdtemp makes 0700; a layer root without its own entry is an ordinary 0755 directory.
    if (::fchmod(root.get(), 0755) != 0) return fail_errno("chmod", dir);
    writer.emplace(std::move(root), options.allow_devices);
  }

  CompressedInput cin;
  cin.fd = blob_fd;
  cin.pipe = blob_pipe;
  // Only a blob read from a file needs a buffer of its own; each untouched MiB allocated per layer
  // cost page faults and a memset (3% of a pull's CPU samples with this one and igzip's unused one).
  if (!blob_pipe) cin.buf.resize(kReadBlock);
  cin.data = cin.buf.data();
  cin.copy_fd = blob_pipe ? -1 : options.copy_fd;
  if (cin.copy_fd >= 0) cin.copy_writeback.emplace(cin.copy_fd);
  cin.expected_size = options.expected_size;
  cin.progress = &options.progress;
  LayerDigests out;
  Decompressor dec;
  dec.limit = options.max_uncompressed_bytes;
  dec.limit_setting = &options.limit_setting;
  auto head = FNEXEC_TRY(cin.primed());
  std::unique_ptr<IsalGzip> isal;
  if (head.size() >= 2 && static_cast<unsigned char>(head[0]) == 0x1f && static_cast<unsigned char>(head[1]) == 0x8b)
    isal = IsalGzip::make();
  ArchivePtr outer(archive_read_new());
  archive_read_support_filter_gzip(outer.get());
  archive_read_support_filter_zstd(outer.get());
  archive_read_support_format_raw(outer.get());
  auto outer_error = [&](std::string_view what) -> Error {
    if (cin.error) return *cin.error;
    return Error{ErrorKind::corrupt, 0, std::string(what), {}, archive_message(outer.get())};
  };
  if (isal) {
    out.compression = "gzip";
    dec.gzip = isal.get();
    dec.compressed = &cin;
  } else {
    if (archive_read_open(outer.get(), &cin, nullptr, compressed_read, nullptr) != ARCHIVE_OK)
      return std::unexpected(outer_error("read layer blob"));
    struct archive_entry* raw_entry;
    if (archive_read_next_header(outer.get(), &raw_entry) != ARCHIVE_OK)
      return std::unexpected(outer_error("read layer blob"));
    switch (archive_filter_code(outer.get(), 0)) {
      case ARCHIVE_FILTER_GZIP: out.compression = "gzip"; break;
      case ARCHIVE_FILTER_ZSTD: out.compression = "zstd"; break;
      default: out.compression = "none";
    }
    dec.outer = outer.get();
  }

  // The producer reads, hashes and copies the compressed blob and decompresses it into the pipe,
  // then reads the blob to its end: the digests cover every byte, including the zero blocks after
  // the tar's end and any compressed bytes after the end of the stream.
  BlockPipe pipe;
  std::thread producer([&] {
    for (;;) {
      auto block = pipe.acquire();
      if (block.empty()) return pipe.close(std::nullopt);  // the tar side failed: it has the error
      auto n = dec.fill(block);
      if (!n) return pipe.close(cin.error ? *cin.error : n.error());
      if (*n == 0) break;
      pipe.publish(*n);
    }
    for (;;) {
      auto n = cin.pull();
      if (!n) return pipe.close(n.error());
      if (*n == 0) return pipe.close(std::nullopt);
    }
  });
  TarInput tin;
  tin.pipe = &pipe;
  // Every way out of the tar side below stops the producer first: one waiting on a blob pipe is
  // woken by cancelling it, one blocked reading a socket by shutting down its reading side
  // (ENOTSOCK for a file, which never blocks).
  auto stop_producer = [&] {
    pipe.cancel();
    if (blob_pipe) blob_pipe->cancel();
    else ::shutdown(blob_fd, SHUT_RD);
    producer.join();
  };
  auto tar_failed = [&](Error own) -> Result<LayerDigests> {
    stop_producer();
    return std::unexpected(tin.error ? *tin.error : std::move(own));
  };
  ArchivePtr tar(archive_read_new());
  archive_read_support_format_tar(tar.get());
  auto tar_error = [&](std::string_view what) -> Error {
    return Error{ErrorKind::corrupt, 0, std::string(what), {}, archive_message(tar.get())};
  };
  if (archive_read_open(tar.get(), &tin, nullptr, tar_read, nullptr) != ARCHIVE_OK)
    return tar_failed(tar_error("read layer tar"));
  for (;;) {
    struct archive_entry* e;
    int r = archive_read_next_header(tar.get(), &e);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) return tar_failed(tar_error("read layer tar"));
    if (writer) {
      auto w = writer->write(tar.get(), e);
      if (!w) return tar_failed(w.error());
    }
  }
  // The rest of the decompressed stream, for the diff_id.
  while (!tin.pull().empty()) {
  }
  producer.join();
  if (tin.error) return std::unexpected(*tin.error);
  if (writer) {
    FNEXEC_TRY(writer->finish());
    out.device_nodes = writer->device_nodes();
    out.device_nodes_skipped = writer->device_nodes_skipped();
  }
  if (options.progress) options.progress(cin.total);
  if (!blob_pipe) out.compressed = cin.hash.finish();
  out.compressed_size = cin.total;
  out.uncompressed = tin.hash.finish();
  out.uncompressed_size = dec.total;
  return out;
}

}  // namespace

Result<LayerDigests> unpack_layer(int blob_fd, std::optional<std::string_view> dest_dir,
                                  const UnpackOptions& options) {
  return unpack(blob_fd, nullptr, dest_dir, options);
}

Result<LayerDigests> unpack_layer(BlockPipe& blob, std::optional<std::string_view> dest_dir,
                                  const UnpackOptions& options) {
  auto r = unpack(-1, &blob, dest_dir, options);
  blob.cancel();
  return r;
}

}  // namespace fnexec::image
