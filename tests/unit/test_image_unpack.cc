// Layer unpacking without privileges: digest verification of both streams, path safety rules,
// whiteout classification. Entries are owned by the test's own uid so no capability is needed.
#include <doctest/doctest.h>

#include <archive.h>
#include <archive_entry.h>
#include <sys/mman.h>
#include <sys/sysmacros.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <functional>

#include <filesystem>
#include <string>
#include <vector>

#include "image/isal_gzip.h"
#include "image/unpack.h"
#include "util/fs.h"
#include "util/unique_fd.h"

using namespace fnexec;
using namespace fnexec::image;

namespace {

struct TarEntry {
  std::string name;
  mode_t type = AE_IFREG;
  std::string data;
  std::string link;      // symlink target
  std::string hardlink;  // hardlink target
  mode_t perm = 0644;
};

// A pax tar (compressed as asked), deterministic for the same entries.
std::string make_tar(const std::vector<TarEntry>& entries, std::string_view compression = "none") {
  struct archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  if (compression == "gzip") archive_write_add_filter_gzip(a);
  if (compression == "zstd") archive_write_add_filter_zstd(a);
  archive_write_set_bytes_in_last_block(a, 1);
  std::vector<char> buf(8 << 20);
  size_t used = 0;
  REQUIRE(archive_write_open_memory(a, buf.data(), buf.size(), &used) == ARCHIVE_OK);
  for (const auto& t : entries) {
    struct archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, t.name.c_str());
    archive_entry_set_filetype(e, t.type);
    archive_entry_set_perm(e, t.perm);
    archive_entry_set_uid(e, ::getuid());
    archive_entry_set_gid(e, ::getgid());
    archive_entry_set_mtime(e, 1000000, 0);
    if (!t.link.empty()) archive_entry_set_symlink(e, t.link.c_str());
    if (!t.hardlink.empty()) archive_entry_set_hardlink(e, t.hardlink.c_str());
    if (t.type == AE_IFCHR) archive_entry_set_rdev(e, makedev(1, 3));
    if (t.type == AE_IFBLK) archive_entry_set_rdev(e, makedev(8, 0));
    archive_entry_set_size(e, static_cast<la_int64_t>(t.data.size()));
    REQUIRE(archive_write_header(a, e) == ARCHIVE_OK);
    if (!t.data.empty()) archive_write_data(a, t.data.data(), t.data.size());
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
  return std::string(buf.data(), used);
}

UniqueFd memfd_with(std::string_view bytes) {
  UniqueFd fd(::memfd_create("layer", MFD_CLOEXEC));
  REQUIRE(fd);
  REQUIRE(::write(fd.get(), bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
  ::lseek(fd.get(), 0, SEEK_SET);
  return fd;
}

Result<LayerDigests> unpack_bytes(std::string_view bytes, const std::filesystem::path* dir,
                                  UnpackOptions options = {}) {
  auto fd = memfd_with(bytes);
  std::optional<std::string_view> dest;
  std::string d = dir ? dir->string() : std::string();
  if (dir) dest = d;
  return unpack_layer(fd.get(), dest, options);
}

const std::vector<TarEntry> kTree = {
    {.name = "dir", .type = AE_IFDIR, .perm = 0750},
    {.name = "dir/file", .data = "hello\n"},
    {.name = "dir/suid", .data = "#!/bin/sh\n", .perm = 04755},
    {.name = "dir/hard", .hardlink = "dir/file"},
    {.name = "dir/rel", .type = AE_IFLNK, .link = "file", .perm = 0777},
    {.name = "abs", .type = AE_IFLNK, .link = "/etc/passwd", .perm = 0777},
    {.name = "fifo", .type = AE_IFIFO},
    {.name = "missing/parent/file", .data = "x"},
};

}  // namespace

TEST_CASE("clean_entry_path normalises, strips leading slashes and refuses escapes") {
  CHECK(*clean_entry_path("./a//b/") == "a/b");
  // umoci names the layer root "/"; GNU tar, Docker and containerd strip leading slashes.
  CHECK(*clean_entry_path("/") == "");
  CHECK(*clean_entry_path("/etc/passwd") == "etc/passwd");
  CHECK(*clean_entry_path("//./a/") == "a");
  CHECK(*clean_entry_path("a/./b") == "a/b");
  CHECK(*clean_entry_path(".") == "");
  CHECK(*clean_entry_path("./") == "");
  CHECK(*clean_entry_path("..a/b..") == "..a/b..");
  for (const char* bad : {"/../x", "../x", "a/../../x", "a/..", "..", "/.."}) {
    auto r = clean_entry_path(bad);
    REQUIRE_MESSAGE(!r, bad);
    CHECK(r.error().kind == ErrorKind::corrupt);
  }
}

TEST_CASE("symlink targets may not climb above the layer root") {
  CHECK(symlink_stays_inside("a/b", "../c"));
  CHECK(symlink_stays_inside("a/b", "x/../../y"));
  CHECK(symlink_stays_inside("l", "/etc/passwd"));
  CHECK(symlink_stays_inside("l", "."));
  CHECK(!symlink_stays_inside("a", "../x"));
  CHECK(!symlink_stays_inside("a/b", "../../x"));
  CHECK(!symlink_stays_inside("a/b", "./../.."));
  CHECK(!symlink_stays_inside("a/b/c", "../x/../../../y"));
  CHECK(*resolve_lexically("a/b", "../c") == "a/c");
  CHECK(*resolve_lexically("", "./x//y/") == "x/y");
  CHECK(!resolve_lexically("a", "../../x"));
}

TEST_CASE("whiteout names become overlay whiteouts") {
  auto w = classify_whiteout("a/b/.wh.gone");
  CHECK(w.kind == Whiteout::remove);
  CHECK(w.path == "a/b/gone");
  CHECK(classify_whiteout(".wh.top").path == "top");
  w = classify_whiteout("d/.wh..wh..opq");
  CHECK(w.kind == Whiteout::opaque);
  CHECK(w.path == "d");
  w = classify_whiteout(".wh..wh..opq");
  CHECK(w.kind == Whiteout::opaque);
  CHECK(w.path.empty());
  CHECK(classify_whiteout("d/.wh..wh.plnk").kind == Whiteout::ignored);
  CHECK(classify_whiteout("d/.wh.").kind == Whiteout::ignored);
  CHECK(classify_whiteout("d/.wh...").kind == Whiteout::ignored);
  CHECK(classify_whiteout("d/x.wh.y").kind == Whiteout::none);
  CHECK(classify_whiteout("plain").kind == Whiteout::none);
}

TEST_CASE("both digests cover every byte of both streams, for each compression") {
  std::string tar = make_tar(kTree);
  // Extra zero blocks after the end-of-archive marker are part of the diff_id.
  std::string padded = tar + std::string(10240, '\0');
  for (std::string_view comp : {"none", "gzip", "zstd"}) {
    CAPTURE(comp);
    std::string blob = comp == "none" ? tar : make_tar(kTree, comp);
    auto d = unpack_bytes(blob, nullptr);
    REQUIRE_MESSAGE(d, d.error().message());
    CHECK(d->compressed == sha256_of(blob));
    CHECK(d->compressed_size == blob.size());
    CHECK(d->uncompressed == sha256_of(tar));
    CHECK(d->uncompressed_size == tar.size());
    CHECK(d->compression == comp);
  }
  auto p = unpack_bytes(padded, nullptr);
  REQUIRE(p);
  CHECK(p->uncompressed == sha256_of(padded));
  CHECK(p->uncompressed != sha256_of(tar));

  // Bytes after the end of a gzip stream are still part of the blob's digest.
  std::string gz = make_tar(kTree, "gzip") + "trailing";
  auto t = unpack_bytes(gz, nullptr);
  if (t) CHECK(t->compressed == sha256_of(gz));
}

// One gzip member of bytes (libarchive's raw format with the gzip filter, as gzip(1) writes it).
std::string gzip_member(std::string_view bytes) {
  struct archive* a = archive_write_new();
  archive_write_set_format_raw(a);
  archive_write_add_filter_gzip(a);
  archive_write_set_bytes_in_last_block(a, 1);
  std::vector<char> buf(bytes.size() * 2 + 4096);
  size_t used = 0;
  REQUIRE(archive_write_open_memory(a, buf.data(), buf.size(), &used) == ARCHIVE_OK);
  struct archive_entry* e = archive_entry_new();
  archive_entry_set_pathname(e, "data");
  archive_entry_set_filetype(e, AE_IFREG);
  REQUIRE(archive_write_header(a, e) == ARCHIVE_OK);
  archive_write_data(a, bytes.data(), bytes.size());
  archive_entry_free(e);
  archive_write_close(a);
  archive_write_free(a);
  return std::string(buf.data(), used);
}

TEST_CASE("gzip through ISA-L: concatenated members are one stream, a bad CRC or a cut stream is refused") {
  std::string tar = make_tar(kTree);
  std::string two = gzip_member(tar.substr(0, 700)) + gzip_member(tar.substr(700));
  std::filesystem::path dir = fs::TempDir::make("/tmp", "fnexec-unit-isal-")->release();
  auto d = unpack_bytes(two, &dir);
  REQUIRE_MESSAGE(d, d.error().message());
  CHECK(d->compressed == sha256_of(two));
  CHECK(d->uncompressed == sha256_of(tar));
  CHECK(std::filesystem::exists(dir / "dir/file"));
  std::filesystem::remove_all(dir);

  auto isal = IsalGzip::make();
  if (!isal) {
    MESSAGE("libisal.so.2 is not installed (apt-get install libisal2): layers inflate through zlib");
    return;
  }
  auto inflate_all = [](std::string blob) -> Result<std::string> {
    auto gz = IsalGzip::make();
    std::string out;
    bool given = false;
    IsalGzip::Input input = [&]() -> Result<std::span<const unsigned char>> {
      if (std::exchange(given, true)) return std::span<const unsigned char>{};
      return std::span(reinterpret_cast<const unsigned char*>(blob.data()), blob.size());
    };
    for (;;) {
      auto block = FNEXEC_TRY(gz->next(input));
      if (block.empty()) return out;
      out.append(reinterpret_cast<const char*>(block.data()), block.size());
    }
  };
  CHECK(*inflate_all(two) == tar);
  std::string one = gzip_member(tar);
  std::string bad_crc = one;
  bad_crc[bad_crc.size() - 6] ^= 1;  // the trailer: CRC32, then the size
  auto r = inflate_all(bad_crc);
  REQUIRE(!r);
  CHECK(r.error().kind == ErrorKind::corrupt);
  CHECK(r.error().message().find("CRC32") != std::string::npos);
  auto cut = inflate_all(one.substr(0, one.size() / 2));
  REQUIRE(!cut);
  CHECK(cut.error().message().find("ends early") != std::string::npos);
  CHECK(*inflate_all(one + "trailing bytes") == tar);
}

TEST_CASE("a blob longer than its descriptor fails while reading; corrupt streams fail") {
  std::string blob = make_tar(kTree, "gzip");
  UnpackOptions o;
  o.expected_size = static_cast<int64_t>(blob.size()) - 1;
  auto r = unpack_bytes(blob, nullptr, o);
  REQUIRE(!r);
  CHECK(r.error().kind == ErrorKind::corrupt);
  CHECK(r.error().message().find("longer than") != std::string::npos);

  std::string broken = blob;
  broken[broken.size() / 2] ^= 0x55;
  broken[broken.size() / 2 + 1] ^= 0x55;
  CHECK(!unpack_bytes(broken, nullptr));
  CHECK(!unpack_bytes(blob.substr(0, blob.size() / 2), nullptr));
  CHECK(!unpack_bytes("this is not a tar archive at all, not even close................", nullptr));
}

TEST_CASE("unpack keeps files, modes, setuid, hardlinks, symlinks, fifos and times") {
  auto tmp = fs::TempDir::make("/tmp", "fnexec-unpack-");
  REQUIRE(tmp);
  auto root = tmp->path();
  auto d = unpack_bytes(make_tar(kTree, "gzip"), &root);
  REQUIRE_MESSAGE(d, d.error().message());
  CHECK(*fs::read_file(root / "dir/file") == "hello\n");
  struct stat a, b;
  REQUIRE(::stat((root / "dir/file").c_str(), &a) == 0);
  REQUIRE(::stat((root / "dir/hard").c_str(), &b) == 0);
  CHECK(a.st_ino == b.st_ino);
  CHECK(a.st_mtime == 1000000);
  REQUIRE(::stat((root / "dir/suid").c_str(), &a) == 0);
  CHECK((a.st_mode & 07777) == 04755);
  REQUIRE(::stat((root / "dir").c_str(), &a) == 0);
  CHECK((a.st_mode & 07777) == 0750);
  CHECK(a.st_mtime == 1000000);  // set after its children were written
  CHECK(std::filesystem::read_symlink(root / "dir/rel") == "file");
  CHECK(std::filesystem::read_symlink(root / "abs") == "/etc/passwd");
  REQUIRE(::lstat((root / "fifo").c_str(), &a) == 0);
  CHECK(S_ISFIFO(a.st_mode));
  CHECK(*fs::read_file(root / "missing/parent/file") == "x");
  REQUIRE(::stat(root.c_str(), &a) == 0);
  CHECK((a.st_mode & 07777) == 0755);
}

TEST_CASE("umoci's layers: a \"/\" root entry, absolute and \"./\" names land under the layer root") {
  auto tmp = fs::TempDir::make("/tmp", "fnexec-umoci-");
  REQUIRE(tmp);
  auto outside = tmp->path() / "outside";
  std::filesystem::create_directory(outside);
  auto layer = tmp->path() / "layer";
  std::filesystem::create_directory(layer);
  auto d = unpack_bytes(make_tar({{.name = "/", .type = AE_IFDIR, .perm = 0751},
                                  {.name = "./etc/", .type = AE_IFDIR, .perm = 0755},
                                  {.name = "./etc/hostname", .data = "box\n"},
                                  {.name = "/bin/", .type = AE_IFDIR, .perm = 0755},
                                  {.name = (outside / "abs").string(), .data = "x"},
                                  {.name = "/bin/sh", .hardlink = "./etc/hostname"}}),
                        &layer);
  REQUIRE_MESSAGE(d, d.error().message());
  struct stat st;
  REQUIRE(::stat(layer.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0751);  // the "/" entry's mode is the layer root's
  CHECK(*fs::read_file(layer / "etc/hostname") == "box\n");
  CHECK(*fs::read_file(layer / "bin/sh") == "box\n");
  CHECK(*fs::read_file(layer / outside.relative_path() / "abs") == "x");
  CHECK(std::filesystem::is_empty(outside));
}

TEST_CASE("device nodes are skipped and counted unless allowed; fifos are kept") {
  auto tmp = fs::TempDir::make("/tmp", "fnexec-dev-");
  REQUIRE(tmp);
  std::vector<TarEntry> entries = {{.name = "./dev/", .type = AE_IFDIR, .perm = 0755},
                                   {.name = "./dev/null", .type = AE_IFCHR, .perm = 0666},
                                   {.name = "./dev/sda", .type = AE_IFBLK, .perm = 0660},
                                   {.name = "./dev/fifo", .type = AE_IFIFO},
                                   {.name = "./dev/after", .data = "still read"}};
  auto skipped = tmp->path() / "skipped";
  std::filesystem::create_directory(skipped);
  auto d = unpack_bytes(make_tar(entries), &skipped);
  REQUIRE_MESSAGE(d, d.error().message());
  CHECK(d->device_nodes == 2);
  CHECK(d->device_nodes_skipped == 2);
  CHECK(!std::filesystem::exists(std::filesystem::symlink_status(skipped / "dev/null")));
  CHECK(!std::filesystem::exists(std::filesystem::symlink_status(skipped / "dev/sda")));
  CHECK(std::filesystem::is_fifo(skipped / "dev/fifo"));
  CHECK(*fs::read_file(skipped / "dev/after") == "still read");
  // Only verifying (no directory) counts nothing: nothing is written.
  auto verified = unpack_bytes(make_tar(entries), nullptr);
  REQUIRE(verified);
  CHECK(verified->uncompressed == d->uncompressed);
  CHECK(verified->device_nodes == 0);

  if (::geteuid() != 0) return;  // mknod of a device needs CAP_MKNOD
  auto kept = tmp->path() / "kept";
  std::filesystem::create_directory(kept);
  UnpackOptions allow;
  allow.allow_devices = true;
  auto k = unpack_bytes(make_tar(entries), &kept, allow);
  REQUIRE_MESSAGE(k, k.error().message());
  CHECK(k->device_nodes == 2);
  CHECK(k->device_nodes_skipped == 0);
  struct stat st;
  REQUIRE(::lstat((kept / "dev/null").c_str(), &st) == 0);
  CHECK(S_ISCHR(st.st_mode));
  CHECK(st.st_rdev == makedev(1, 3));
  CHECK((st.st_mode & 07777) == 0666);
  REQUIRE(::lstat((kept / "dev/sda").c_str(), &st) == 0);
  CHECK(S_ISBLK(st.st_mode));
}

TEST_CASE("blob_compression reads the magic bytes") {
  for (std::string_view c : {"none", "gzip", "zstd"}) {
    CAPTURE(c);
    auto fd = memfd_with(make_tar({{.name = "f", .data = "x"}}, c));
    CHECK(*blob_compression(fd.get()) == c);
  }
  auto empty = memfd_with("");
  CHECK(*blob_compression(empty.get()) == "none");
}

TEST_CASE("the process umask does not reach the layer: a service's UMask=0077 keeps the image's modes") {
  auto tmp = fs::TempDir::make("/tmp", "fnexec-umask-");
  REQUIRE(tmp);
  auto root = tmp->path();
  mode_t old = ::umask(0077);
  auto d = unpack_bytes(make_tar(kTree), &root);
  ::umask(old);
  REQUIRE_MESSAGE(d, d.error().message());
  auto mode_of = [&](const char* rel) {
    struct stat st {};
    REQUIRE(::stat((root / rel).c_str(), &st) == 0);
    return st.st_mode & 07777;
  };
  CHECK(mode_of(".") == 0755);
  CHECK(mode_of("dir") == 0750);
  CHECK(mode_of("dir/file") == 0644);
  CHECK(mode_of("dir/suid") == 04755);
  CHECK(mode_of("missing") == 0755);  // parents the archive does not list
  CHECK(mode_of("missing/parent") == 0755);
  CHECK(mode_of("missing/parent/file") == 0644);
}

TEST_CASE("hostile entries are refused and nothing is written outside the layer") {
  auto tmp = fs::TempDir::make("/tmp", "fnexec-hostile-");
  REQUIRE(tmp);
  auto outside = tmp->path() / "outside";
  std::filesystem::create_directory(outside);
  struct Case {
    const char* why;
    std::vector<TarEntry> entries;
    const char* message;
  };
  std::vector<Case> cases = {
      {"dotdot", {{.name = "../outside/x", .data = "x"}}, "\"..\" components"},
      {"through symlink",
       {{.name = "s", .type = AE_IFLNK, .link = outside.string()}, {.name = "s/x", .data = "x"}},
       "symlink"},
      {"through relative symlink",
       {{.name = "d", .type = AE_IFDIR}, {.name = "d/s", .type = AE_IFLNK, .link = "."}, {.name = "d/s/x", .data = "x"}},
       "symlink"},
      {"climbing symlink", {{.name = "d/s", .type = AE_IFLNK, .link = "../../outside"}}, "climbs out"},
      {"hardlink dotdot", {{.name = "h", .hardlink = "../outside/t"}}, "\"..\" components"},
      // An absolute target names a file of the layer, like an absolute entry name.
      {"hardlink absolute", {{.name = "h", .hardlink = (outside / "t").string()}}, "not a file of this layer"},
      {"hardlink via symlink",
       {{.name = "s", .type = AE_IFLNK, .link = outside.string()}, {.name = "h", .hardlink = "s/t"}},
       "not a file of this layer"},
      {"hardlink missing", {{.name = "h", .hardlink = "nothing"}}, "not a file of this layer"},
  };
  std::filesystem::path target = outside / "t";
  REQUIRE(fs::write_file_atomic(target, "precious"));
  for (const auto& c : cases) {
    CAPTURE(c.why);
    auto layer = fs::TempDir::make(tmp->path(), "layer-");
    REQUIRE(layer);
    auto root = layer->path();
    auto r = unpack_bytes(make_tar(c.entries), &root);
    REQUIRE(!r);
    CHECK(r.error().kind == ErrorKind::corrupt);
    CHECK_MESSAGE(r.error().message().find(c.message) != std::string::npos, r.error().message());
    size_t n = 0;
    for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(outside)) ++n;
    CHECK(n == 1);
    CHECK(*fs::read_file(target) == "precious");
  }
}

// Hostile layers that only work together or bend whiteouts and sizes: each layer is unpacked into its
// own directory, so a symlink of one layer is never followed while a later one is written.
TEST_CASE("across layers: a symlink to /etc or outside in one layer, written through by the next, stays in the store") {
  auto tmp = fs::TempDir::make("/tmp", "fnexec-sec-devtls-layers-");
  REQUIRE(tmp);
  auto outside = tmp->path() / "outside";
  std::filesystem::create_directory(outside);
  REQUIRE(fs::write_file_atomic(outside / "passwd", "precious"));
  auto lower = tmp->path() / "lower", upper = tmp->path() / "upper";
  std::filesystem::create_directory(lower);
  std::filesystem::create_directory(upper);
  auto l = unpack_bytes(make_tar({{.name = "x", .type = AE_IFLNK, .link = outside.string()},
                                  {.name = "etc", .type = AE_IFLNK, .link = "/etc"},
                                  {.name = "file", .data = "lower"}}),
                        &lower);
  REQUIRE_MESSAGE(l, l.error().message());
  // The next layer writes x/passwd and etc/passwd: new directories of its own, not the targets.
  auto u = unpack_bytes(make_tar({{.name = "x/passwd", .data = "evil"}, {.name = "etc/passwd", .data = "evil"}}), &upper);
  REQUIRE_MESSAGE(u, u.error().message());
  CHECK(*fs::read_file(upper / "x/passwd") == "evil");
  CHECK(std::filesystem::is_directory(std::filesystem::symlink_status(upper / "x")));
  CHECK(*fs::read_file(outside / "passwd") == "precious");
  CHECK(fs::read_file("/etc/passwd")->find("evil") == std::string::npos);
  // A hardlink to a file of an earlier layer (or through its symlink) is not a file of this layer.
  for (const char* target : {"file", "x/passwd", "etc/passwd"}) {
    CAPTURE(target);
    auto again = tmp->path() / (std::string("hl-") + std::to_string(std::hash<std::string>{}(target)));
    std::filesystem::create_directory(again);
    auto h = unpack_bytes(make_tar({{.name = "h", .hardlink = target}}), &again);
    REQUIRE(!h);
    CHECK(h.error().kind == ErrorKind::corrupt);
    CHECK_MESSAGE(h.error().message().find("not a file of this layer") != std::string::npos, h.error().message());
  }
  CHECK(*fs::read_file(outside / "passwd") == "precious");
}

TEST_CASE("whiteouts that traverse are refused; whiteouts through a symlink remove nothing outside") {
  auto tmp = fs::TempDir::make("/tmp", "fnexec-sec-devtls-wh-");
  REQUIRE(tmp);
  auto outside = tmp->path() / "outside";
  std::filesystem::create_directory(outside);
  REQUIRE(fs::write_file_atomic(outside / "victim", "precious"));
  struct Case {
    const char* why;
    std::vector<TarEntry> entries;
  };
  std::vector<Case> cases = {
      {"dotdot whiteout", {{.name = "../.wh.victim"}}},
      {"dotdot dir whiteout", {{.name = "d/../../outside/.wh.victim"}}},
      {"dotdot opaque", {{.name = "../outside/.wh..wh..opq"}}},
      {"whiteout through symlink", {{.name = "s", .type = AE_IFLNK, .link = outside.string()}, {.name = "s/.wh.victim"}}},
      {"opaque through symlink", {{.name = "s", .type = AE_IFLNK, .link = outside.string()}, {.name = "s/.wh..wh..opq"}}},
  };
  for (const auto& c : cases) {
    CAPTURE(c.why);
    auto layer = fs::TempDir::make(tmp->path(), "layer-");
    REQUIRE(layer);
    auto root = layer->path();
    auto r = unpack_bytes(make_tar(c.entries), &root);
    CHECK(!r);
    if (!r) CHECK(r.error().kind == ErrorKind::corrupt);
    CHECK(*fs::read_file(outside / "victim") == "precious");
    char value[8];
    CHECK(::getxattr(outside.c_str(), "trusted.overlay.opaque", value, sizeof value) < 0);
  }
  // ".wh..." names ".." and ".wh." names nothing: ignored, never a whiteout of the parent.
  auto layer = tmp->path() / "dots";
  std::filesystem::create_directory(layer);
  auto r = unpack_bytes(make_tar({{.name = "d", .type = AE_IFDIR, .perm = 0755}, {.name = "d/.wh..."}, {.name = "d/.wh."}}), &layer);
  REQUIRE_MESSAGE(r, r.error().message());
  CHECK(std::filesystem::is_directory(layer / "d"));
  CHECK(std::filesystem::exists(outside / "victim"));
}

TEST_CASE("a tar that lies about an entry's size is refused, with nothing after it unpacked") {
  auto tmp = fs::TempDir::make("/tmp", "fnexec-sec-devtls-size-");
  REQUIRE(tmp);
  std::string tar = make_tar({{.name = "big", .data = std::string(4096, 'a')}, {.name = "after", .data = "x"}});
  // Cut inside big's data: the header promises 4096 bytes the stream does not have.
  auto cut = tar.substr(0, 512 + 1000);
  auto root = tmp->path();
  auto r = unpack_bytes(cut, &root);
  REQUIRE(!r);
  CHECK(!std::filesystem::exists(root / "after"));
  // A size field that is not octal at all.
  std::string bad = tar;
  std::memcpy(bad.data() + 124, "zzzzzzzzzzz", 11);
  auto layer = tmp->path() / "bad";
  std::filesystem::create_directory(layer);
  auto b = unpack_bytes(bad, &layer);
  CHECK(!b);
}

TEST_CASE("deep nesting: 1,000 levels unpack inside the layer; a name over PATH_MAX is a clear error") {
  auto tmp = fs::TempDir::make("/tmp", "fnexec-sec-devtls-deep-");
  REQUIRE(tmp);
  std::string deep;
  for (int i = 0; i < 1000; ++i) deep += "d/";
  auto root = tmp->path() / "ok";
  std::filesystem::create_directory(root);
  auto r = unpack_bytes(make_tar({{.name = deep + "leaf", .data = "x"}}), &root);
  REQUIRE_MESSAGE(r, r.error().message());
  std::string tooDeep;
  for (int i = 0; i < 3000; ++i) tooDeep += "d/";
  auto root2 = tmp->path() / "too";
  std::filesystem::create_directory(root2);
  auto t = unpack_bytes(make_tar({{.name = tooDeep + "leaf", .data = "x"}}), &root2);
  if (!t) CHECK(!t.error().message().empty());
  CHECK(std::filesystem::exists(tmp->path() / "ok"));
}
