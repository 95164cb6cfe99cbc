// The image store end to end (root): images built by rootfs-tools/mkimage at test time, imported
// with the fnexec binary, checked through a real overlay mount of the resolved layers.
#include <doctest/doctest.h>

#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "image/store.h"
#include "support/fixtures.h"
#include "support/proc.h"
#include "util/fs.h"

using namespace fnexec;
namespace stdfs = std::filesystem;
using test::ProcResult;

namespace {

ProcResult tool(const std::string& name, std::vector<std::string> args, const stdfs::path& tmpdir) {
  args.insert(args.begin(), test::rootfs_tool(name).string());
  test::ProcOptions o;
  o.env["TMPDIR"] = tmpdir.string();
  return test::run(args, o);
}

ProcResult fnexec_in(const stdfs::path& store, std::vector<std::string> args) {
  args.insert(args.begin(), {"--root", store.string()});
  return test::fnexec(args);
}

void write(const stdfs::path& p, const std::string& data, mode_t mode = 0644, uid_t uid = 0, gid_t gid = 0) {
  stdfs::create_directories(p.parent_path());
  REQUIRE(fs::write_file_atomic(p, data));
  REQUIRE(::chown(p.c_str(), uid, gid) == 0);
  REQUIRE(::chmod(p.c_str(), mode) == 0);
}

// Two layer source trees: the second deletes del/gone and makes opq/ opaque.
struct Sources {
  stdfs::path one, two;
  explicit Sources(const stdfs::path& base) : one(base / "src1"), two(base / "src2") {
    write(one / "a/f", "hello");
    REQUIRE(::link((one / "a/f").c_str(), (one / "a/hl").c_str()) == 0);
    stdfs::create_symlink("f", one / "a/sl");
    stdfs::create_symlink("/etc/passwd", one / "abs");
    REQUIRE(::setxattr((one / "a/f").c_str(), "user.test", "val", 3, 0) == 0);
    write(one / "opq/old", "old");
    write(one / "del/gone", "gone");
    write(one / "del/keep", "keep");
    write(one / "bin/suid", "#!/bin/sh\n", 04755, 1000, 1000);
    REQUIRE(::chown((one / "bin/suid").c_str(), 1000, 1000) == 0);
    REQUIRE(::chmod((one / "bin/suid").c_str(), 04755) == 0);  // chown cleared setuid
    write(one / "owned", "owned", 0640, 123, 456);
    write(two / "new", "new");
    write(two / "opq/fresh", "fresh");
    for (auto d : {one / "a", one / "opq", one / "del", one / "bin", two / "opq"}) ::chmod(d.c_str(), 0755);
  }
  std::vector<std::string> layer_args() const {
    return {"--dir", one.string(), "--dir", two.string(), "--delete", "del/gone", "--opaque", "opq"};
  }
};

const char* kExpectedTree =
    "a d 755 0:0\n"
    "a/f f 644 0:0 nlink=2 hello\n"
    "a/hl f 644 0:0 nlink=2 hello\n"
    "a/sl l -> f\n"
    "abs l -> /etc/passwd\n"
    "bin d 755 0:0\n"
    "bin/suid f 4755 1000:1000 nlink=1 #!/bin/sh\n\n"
    "del d 755 0:0\n"
    "del/keep f 644 0:0 nlink=1 keep\n"
    "new f 644 0:0 nlink=1 new\n"
    "opq d 755 0:0\n"
    "opq/fresh f 644 0:0 nlink=1 fresh\n"
    "owned f 640 123:456 nlink=1 owned\n";

std::string describe_tree(const stdfs::path& root) {
  std::map<std::string, std::string> lines;
  for (auto it = stdfs::recursive_directory_iterator(root); it != stdfs::recursive_directory_iterator(); ++it) {
    struct stat st;
    REQUIRE(::lstat(it->path().c_str(), &st) == 0);
    std::string rel = it->path().lexically_relative(root).string();
    char buf[64];
    std::snprintf(buf, sizeof buf, " %o %u:%u", st.st_mode & 07777, st.st_uid, st.st_gid);
    std::string line;
    if (S_ISLNK(st.st_mode)) line = " l -> " + stdfs::read_symlink(it->path()).string();
    else if (S_ISDIR(st.st_mode)) line = std::string(" d") + buf;
    else if (S_ISREG(st.st_mode))
      line = std::string(" f") + buf + " nlink=" + std::to_string(st.st_nlink) + " " + *fs::read_file(it->path());
    else line = " other";
    lines[rel] = rel + line;
  }
  std::string out;
  for (auto& [k, v] : lines) out += v + "\n";
  return out;
}

// An overlay of the image's layers (top layer first in lowerdir) with a throwaway upper.
class OverlayMount {
 public:
  OverlayMount(const image::ResolvedImage& img, const stdfs::path& base) : target_(base / "mnt") {
    for (auto d : {"mnt", "upper", "work"}) stdfs::create_directories(base / d);
    std::string lower;
    for (auto it = img.layers.rbegin(); it != img.layers.rend(); ++it) lower += (lower.empty() ? "" : ":") + it->string();
    std::string opts = "lowerdir=" + lower + ",upperdir=" + (base / "upper").string() + ",workdir=" + (base / "work").string();
    REQUIRE_MESSAGE(::mount("overlay", target_.c_str(), "overlay", 0, opts.c_str()) == 0, opts);
  }
  ~OverlayMount() { ::umount2(target_.c_str(), MNT_DETACH); }
  const stdfs::path& path() const { return target_; }

 private:
  stdfs::path target_;
};

// Every path in the store with its size, and the refs document: "the store as it was".
std::string store_state(const stdfs::path& store) {
  std::string out;
  if (!stdfs::exists(store)) return out;
  std::map<std::string, uintmax_t> entries;
  for (auto it = stdfs::recursive_directory_iterator(store); it != stdfs::recursive_directory_iterator(); ++it) {
    struct stat st;
    ::lstat(it->path().c_str(), &st);
    entries[it->path().lexically_relative(store).string()] = S_ISREG(st.st_mode) ? st.st_size : 0;
  }
  for (auto& [k, v] : entries) out += k + " " + std::to_string(v) + "\n";
  if (auto refs = fs::read_file(store / "refs.json")) out += *refs;
  return out;
}

void check_image_tree(const stdfs::path& store, const std::string& ref, const stdfs::path& scratch) {
  auto st = image::Store::open(store);
  REQUIRE(st);
  auto img = st->resolve(ref);
  REQUIRE_MESSAGE(img, img.error().message());
  CHECK(img->layers.size() == 2);
  for (const auto& l : img->layers) CHECK(l.is_absolute());
  OverlayMount m(*img, scratch);
  CHECK(describe_tree(m.path()) == kExpectedTree);
  char val[16] = {};
  CHECK(::getxattr((m.path() / "a/f").c_str(), "user.test", val, sizeof val) == 3);
  CHECK(std::string(val) == "val");
}

const char* kHostileTarScript = R"PY(
import io, sys, tarfile
out, kind = sys.argv[1], sys.argv[2]
def add(tf, name, type=tarfile.REGTYPE, data=b"", link=""):
    ti = tarfile.TarInfo(name); ti.type = type; ti.linkname = link; ti.size = len(data); ti.mode = 0o644
    if type == tarfile.CHRTYPE: ti.devmajor, ti.devminor = 1, 3
    tf.addfile(ti, io.BytesIO(data) if data else None)
with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
    add(tf, "ok", data=b"fine")
    if kind == "dotdot": add(tf, "../evil", data=b"x")
    if kind == "absolute": add(tf, "/evil", data=b"x")
    if kind == "through_symlink":
        add(tf, "s", tarfile.SYMTYPE, link="/tmp"); add(tf, "s/evil", data=b"x")
    if kind == "climbing_symlink": add(tf, "d/s", tarfile.SYMTYPE, link="../../../evil")
    if kind == "hardlink_outside": add(tf, "h", tarfile.LNKTYPE, link="../../etc/passwd")
    if kind == "hardlink_missing": add(tf, "h", tarfile.LNKTYPE, link="nothing/here")
    if kind == "device": add(tf, "null", tarfile.CHRTYPE)
)PY";

std::string largest_blob(const stdfs::path& layout) {
  std::string best;
  uintmax_t size = 0;
  for (auto& e : stdfs::directory_iterator(layout / "blobs/sha256"))
    if (e.file_size() > size) size = e.file_size(), best = e.path().string();
  return best;
}

}  // namespace

TEST_CASE("import in all three formats and compressions gives exactly the expected tree") {
  REQUIRE(test::is_root());
  test::ScratchTmpfs scratch;
  Sources src(scratch.path());
  for (std::string comp : {"gzip", "zstd", "none"}) {
    for (std::string format : {"oci", "oci-archive", "docker-archive"}) {
      CAPTURE(comp);
      CAPTURE(format);
      auto base = scratch / (format + "-" + comp);
      stdfs::create_directories(base);
      auto out = base / "image";
      std::vector<std::string> args = src.layer_args();
      args.insert(args.end(), {"--compression", comp, "--ref", "t:1", "--mtime", "0"});
      args.insert(args.end(), {format == "oci" ? "--output" : "--" + format, out.string()});
      auto built = tool("mkimage", args, base);
      REQUIRE_MESSAGE(built.exit_code == 0, built.err);
      auto store = base / "store";
      auto r = fnexec_in(store, {"image", "import", format + ":" + out.string()});
      REQUIRE_MESSAGE(r.exit_code == 0, r.err);
      CHECK(r.out.starts_with("t:1 sha256:"));
      check_image_tree(store, "t:1", base);
      CHECK(stdfs::is_empty(store / "tmp"));
    }
  }
}

TEST_CASE("plain paths are detected; Docker media types and image indexes import") {
  REQUIRE(test::is_root());
  test::ScratchTmpfs scratch;
  Sources src(scratch.path());
  auto args = src.layer_args();
  args.insert(args.end(), {"--docker-media-types", "--output", (scratch / "docker-mt").string()});
  REQUIRE(tool("mkimage", args, scratch.path()).exit_code == 0);
  args = src.layer_args();
  args.insert(args.end(), {"--platform-index", "--oci-archive", (scratch / "multi.tar").string()});
  REQUIRE(tool("mkimage", args, scratch.path()).exit_code == 0);
  auto store = scratch / "store";
  auto r = fnexec_in(store, {"image", "import", (scratch / "docker-mt").string(), "--name", "dmt:2"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  check_image_tree(store, "dmt:2", scratch / "x");
  r = fnexec_in(store, {"image", "import", (scratch / "multi.tar").string(), "--name", "multi"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  check_image_tree(store, "multi:latest", scratch / "y");
  auto st = image::Store::open(store);
  CHECK(st->resolve("multi")->config.architecture == "amd64");

  auto ls = fnexec_in(store, {"image", "ls", "--json"});
  REQUIRE(ls.exit_code == 0);
  CHECK(ls.out.find("\"name\":\"dmt\",\"tag\":\"2\"") != std::string::npos);
  CHECK(ls.out.find("\"name\":\"multi\",\"tag\":\"latest\"") != std::string::npos);
  auto inspect = fnexec_in(store, {"image", "inspect", "dmt:2"});
  REQUIRE(inspect.exit_code == 0);
  CHECK(inspect.out.find(st->resolve("dmt:2")->manifest_digest) != std::string::npos);
  CHECK(inspect.out.find("application/vnd.docker.image.rootfs.diff.tar.gzip") != std::string::npos);
  CHECK(fnexec_in(store, {"image", "inspect", "nosuch"}).exit_code == 125);
}

TEST_CASE("two images sharing a layer unpack it once") {
  REQUIRE(test::is_root());
  test::ScratchTmpfs scratch;
  Sources src(scratch.path());
  auto a = scratch / "a", b = scratch / "b";
  REQUIRE(tool("mkimage", {"--dir", src.one.string(), "--mtime", "0", "-o", a.string()}, scratch.path()).exit_code == 0);
  auto args = src.layer_args();
  args.insert(args.end(), {"--mtime", "0", "-o", b.string()});
  REQUIRE(tool("mkimage", args, scratch.path()).exit_code == 0);
  auto store = scratch / "store";
  REQUIRE(fnexec_in(store, {"image", "import", "oci:" + a.string(), "--name", "a"}).exit_code == 0);
  auto st = image::Store::open(store);
  auto ia = st->resolve("a");
  REQUIRE(ia);
  REQUIRE(ia->layers.size() == 1);
  struct stat before, after;
  REQUIRE(::stat(ia->layers[0].c_str(), &before) == 0);
  // A marker inside the unpacked layer survives only if the second import leaves the layer alone.
  write(ia->layers[0] / ".marker", "m");
  REQUIRE(fnexec_in(store, {"image", "import", "oci:" + b.string(), "--name", "b"}).exit_code == 0);
  auto ib = st->resolve("b");
  REQUIRE(ib);
  REQUIRE(ib->layers.size() == 2);
  CHECK(ib->layers[0] == ia->layers[0]);
  REQUIRE(::stat(ib->layers[0].c_str(), &after) == 0);
  CHECK(before.st_ino == after.st_ino);
  CHECK(stdfs::exists(ib->layers[0] / ".marker"));
  size_t n = 0;
  for ([[maybe_unused]] auto& e : stdfs::directory_iterator(store / "layers/sha256")) ++n;
  CHECK(n == 2);
}

TEST_CASE("hostile images are refused and leave the store exactly as it was") {
  REQUIRE(test::is_root());
  test::ScratchTmpfs scratch;
  Sources src(scratch.path());
  auto store = scratch / "store";
  auto good = scratch / "good";
  REQUIRE(tool("mkimage", {"--dir", src.one.string(), "--mtime", "0", "-o", good.string()}, scratch.path()).exit_code == 0);
  REQUIRE(fnexec_in(store, {"image", "import", "oci:" + good.string(), "--name", "good"}).exit_code == 0);
  const std::string before = store_state(store);

  struct Case {
    std::string name;
    std::string expect;  // in the error message
  };
  // Entries that must never be unpacked; the first layer (src2) is new to the store, so a failure
  // must also take it away again.
  for (const Case& c : std::vector<Case>{{"dotdot", "\"..\" components are refused"},
                                         {"through_symlink", "writing through symlinks is refused"},
                                         {"climbing_symlink", "climbs out of the layer"},
                                         {"hardlink_outside", "\"..\" components are refused"},
                                         {"hardlink_missing", "is not a file of this layer"}}) {
    CAPTURE(c.name);
    auto tar = scratch / (c.name + ".tar");
    REQUIRE(test::run({"python3", "-c", kHostileTarScript, tar.string(), c.name}).exit_code == 0);
    auto layout = scratch / ("hostile-" + c.name);
    auto built = tool("mkimage", {"--dir", src.two.string(), "--raw-layer", tar.string(), "-o", layout.string()},
                      scratch.path());
    REQUIRE_MESSAGE(built.exit_code == 0, built.err);
    auto r = fnexec_in(store, {"image", "import", "oci:" + layout.string(), "--name", "bad"});
    CHECK(r.exit_code == 125);
    CHECK_MESSAGE(r.err.find(c.expect) != std::string::npos, r.err);
    CHECK(store_state(store) == before);
  }
  CHECK(!stdfs::exists("/tmp/evil"));

  // Defects in blobs and documents, each made on a fresh copy of a good two-layer layout.
  auto base = scratch / "base";
  auto args = src.layer_args();
  args.insert(args.end(), {"-o", base.string()});
  REQUIRE(tool("mkimage", args, scratch.path()).exit_code == 0);
  struct Defect {
    std::string name;
    std::function<void(const stdfs::path&)> make;
    std::string expect;
  };
  auto edit = [&](std::vector<std::string> a) {
    return [a, &scratch](const stdfs::path& dir) {
      auto all = a;
      all.insert(all.begin(), dir.string());
      auto r = tool("oci-edit", all, scratch.path());
      REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    };
  };
  std::vector<Defect> defects = {
      {"flipped byte",
       [](const stdfs::path& dir) {
         auto blob = largest_blob(dir);
         std::string data = *fs::read_file(blob);
         data[data.size() / 2] ^= 0x01;
         REQUIRE(fs::write_file_atomic(blob, data));
       },
       "has digest"},
      {"short blob",
       [](const stdfs::path& dir) { stdfs::resize_file(largest_blob(dir), stdfs::file_size(largest_blob(dir)) - 7); },
       "shorter than"},
      {"long blob",
       [](const stdfs::path& dir) {
         auto blob = largest_blob(dir);
         REQUIRE(fs::write_file_atomic(blob, *fs::read_file(blob) + "extra"));
       },
       "longer than"},
      {"diff_id", edit({"--diff-id", "1=sha256:" + std::string(64, '0')}), "but the config says"},
      {"manifest json", edit({"--manifest-raw", "{\"schemaVersion\":2,"}), "not valid JSON"},
      {"config json", edit({"--config-raw", "nope"}), "not valid JSON"},
      {"media type", edit({"--index-media-type", "application/vnd.oci.image.config.v1+json"}), "is not a manifest"},
  };
  for (const auto& d : defects) {
    CAPTURE(d.name);
    auto copy = scratch / ("defect-" + std::to_string(&d - defects.data()));
    stdfs::copy(base, copy, stdfs::copy_options::recursive);
    d.make(copy);
    auto r = fnexec_in(store, {"image", "import", "oci:" + copy.string(), "--name", "bad"});
    CHECK(r.exit_code == 125);
    CHECK_MESSAGE(r.err.find(d.expect) != std::string::npos, r.err);
    CHECK(store_state(store) == before);
  }

}

TEST_CASE("gzip bombs: a layer or image over its unpacked-size cap is refused early and leaves the store as it was") {
  REQUIRE(test::is_root());
  test::ScratchTmpfs scratch;
  auto store = scratch / "store";
  // 64 MiB of zeros in one file gzips to ~64 KiB: the cap stops the unpack at 16 MiB.
  auto zeros = scratch / "zeros";
  stdfs::create_directories(zeros);
  { std::ofstream(zeros / "big", std::ios::binary) << std::string(64 << 20, '\0'); }
  auto bomb = scratch / "bomb";
  REQUIRE(tool("mkimage", {"--dir", zeros.string(), "-o", bomb.string()}, scratch.path()).exit_code == 0);
  stdfs::remove_all(zeros);
  CHECK(stdfs::file_size(largest_blob(bomb)) < (1 << 20));
  REQUIRE(fnexec_in(store, {"image", "import", "oci:" + bomb.string(), "--name", "seed", "--max-layer-bytes", "128m"})
              .exit_code == 0);
  REQUIRE(fnexec_in(store, {"image", "rm", "seed"}).exit_code == 0);
  REQUIRE(fnexec_in(store, {"image", "gc"}).exit_code == 0);
  const std::string before = store_state(store);
  auto r = fnexec_in(store, {"image", "import", "oci:" + bomb.string(), "--name", "bomb", "--max-layer-bytes", "16m"});
  CHECK(r.exit_code == 125);
  CHECK_MESSAGE(r.err.find("it unpacks to more than 16777216 bytes (--max-layer-bytes)") != std::string::npos, r.err);
  CHECK(store_state(store) == before);

  // Two layers of 10 MiB each fit a 16 MiB layer cap but not a 16 MiB image cap.
  auto a = scratch / "a", b = scratch / "b";
  stdfs::create_directories(a);
  stdfs::create_directories(b);
  { std::ofstream(a / "f", std::ios::binary) << std::string(10 << 20, 'a'); }
  { std::ofstream(b / "g", std::ios::binary) << std::string(10 << 20, 'b'); }
  auto two = scratch / "two";
  REQUIRE(tool("mkimage", {"--dir", a.string(), "--dir", b.string(), "-o", two.string()}, scratch.path()).exit_code == 0);
  auto over = fnexec_in(store, {"image", "import", "oci:" + two.string(), "--name", "two", "--max-layer-bytes", "16m",
                                "--max-image-bytes", "16m"});
  CHECK(over.exit_code == 125);
  CHECK_MESSAGE(over.err.find("what is left of the image's limit of 16777216 bytes, --max-image-bytes") !=
                    std::string::npos,
                over.err);
  CHECK(store_state(store) == before);
  auto fits = fnexec_in(store, {"image", "import", "oci:" + two.string(), "--name", "two", "--max-image-bytes", "21m"});
  CHECK_MESSAGE(fits.exit_code == 0, fits.err);
  auto bad_flag = fnexec_in(store, {"image", "import", "oci:" + two.string(), "--max-layer-bytes", "lots"});
  CHECK(bad_flag.exit_code != 0);
}

TEST_CASE("absolute names land under the layer root; device nodes are skipped and counted unless allowed") {
  REQUIRE(test::is_root());
  test::ScratchTmpfs scratch;
  Sources src(scratch.path());
  auto layout = [&](const std::string& kind) {
    auto tar = scratch / (kind + ".tar");
    REQUIRE(test::run({"python3", "-c", kHostileTarScript, tar.string(), kind}).exit_code == 0);
    auto out = scratch / ("layout-" + kind);
    auto built = tool("mkimage", {"--dir", src.two.string(), "--raw-layer", tar.string(), "-o", out.string()},
                      scratch.path());
    REQUIRE_MESSAGE(built.exit_code == 0, built.err);
    return out;
  };
  auto store = scratch / "store";
  auto r = fnexec_in(store, {"image", "import", "oci:" + layout("absolute").string(), "--name", "abs"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  auto img = image::Store::open(store)->resolve("abs");
  REQUIRE(img);
  CHECK(*fs::read_file(img->layers.back() / "evil") == "x");
  CHECK(!stdfs::exists("/evil"));

  // Without --allow-devices: imported, one line says how many nodes were skipped, inspect counts them.
  auto dev = layout("device");
  r = fnexec_in(store, {"image", "import", "oci:" + dev.string(), "--name", "dev"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK_MESSAGE(r.err.find("skipped 1 device node in its layers") != std::string::npos, r.err);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  img = image::Store::open(store)->resolve("dev");
  REQUIRE(img);
  CHECK(!stdfs::exists(stdfs::symlink_status(img->layers.back() / "null")));
  CHECK(*fs::read_file(img->layers.back() / "ok") == "fine");
  auto inspect = fnexec_in(store, {"image", "inspect", "dev"});
  REQUIRE(inspect.exit_code == 0);
  CHECK_MESSAGE(inspect.out.find("\"device_nodes_skipped\": 1,") != std::string::npos, inspect.out);
  CHECK(inspect.out.find("\"device_nodes\":1,\"device_nodes_skipped\":1}") != std::string::npos);
  // The layer stays as it was unpacked; --allow-devices then says why the node is still missing.
  r = fnexec_in(store, {"image", "import", "oci:" + dev.string(), "--name", "dev", "--allow-devices"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK_MESSAGE(r.err.find("stays without its 1 device nodes") != std::string::npos, r.err);
  // gc removes a layer's record with the layer.
  REQUIRE(fnexec_in(store, {"image", "rm", "dev"}).exit_code == 0);
  REQUIRE(fnexec_in(store, {"image", "gc"}).exit_code == 0);
  size_t records = 0;
  for ([[maybe_unused]] auto& e : stdfs::directory_iterator(store / "layer-info")) ++records;
  CHECK(records == 2);  // abs's two layers

  // The same layer imports with its node when devices are allowed.
  r = fnexec_in(store, {"image", "import", "oci:" + dev.string(), "--name", "dev", "--allow-devices"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK(r.err.empty());
  img = image::Store::open(store)->resolve("dev");
  REQUIRE(img);
  struct stat st;
  REQUIRE(::lstat((img->layers.back() / "null").c_str(), &st) == 0);
  CHECK(S_ISCHR(st.st_mode));
  CHECK(st.st_rdev == makedev(1, 3));
  inspect = fnexec_in(store, {"image", "inspect", "dev"});
  CHECK(inspect.out.find("\"device_nodes\":1,\"device_nodes_skipped\":0}") != std::string::npos);
}

TEST_CASE("a docker-archive of either layout imports twice to the same image") {
  REQUIRE(test::is_root());
  test::ScratchTmpfs scratch;
  Sources src(scratch.path());
  for (std::string layout : {"classic", "25"}) {
    for (std::string comp : {"none", "gzip"}) {
      CAPTURE(layout);
      CAPTURE(comp);
      auto archive = scratch / ("d-" + layout + "-" + comp + ".tar");
      auto args = src.layer_args();
      args.insert(args.end(), {"--compression", comp, "--ref", "d:1", "--mtime", "0", "--docker-layout", layout,
                               "--docker-archive", archive.string()});
      auto built = tool("mkimage", args, scratch.path());
      REQUIRE_MESSAGE(built.exit_code == 0, built.err);
      auto store = scratch / ("store-" + layout + "-" + comp);
      auto first = fnexec_in(store, {"image", "import", "docker-archive:" + archive.string()});
      REQUIRE_MESSAGE(first.exit_code == 0, first.err);
      auto again = fnexec_in(store, {"image", "import", "docker-archive:" + archive.string()});
      REQUIRE_MESSAGE(again.exit_code == 0, again.err);
      CHECK(again.out == first.out);
      auto ls = fnexec_in(store, {"image", "ls", "--json"});
      REQUIRE(ls.exit_code == 0);
      CHECK(ls.out.find("\"size\":-") == std::string::npos);
      CHECK(std::count(ls.out.begin(), ls.out.end(), '{') == 1);  // one name, not a dangling second
      auto st = image::Store::open(store);
      auto details = st->inspect("d:1");
      REQUIRE_MESSAGE(details, details.error().message());
      for (const auto& l : details->layers) {
        CAPTURE(l.digest);
        CHECK(l.size == static_cast<int64_t>(stdfs::file_size(store / "blobs/sha256" / l.digest.substr(7))));
        CHECK(l.media_type == (comp == "gzip" ? "application/vnd.oci.image.layer.v1.tar+gzip"
                                              : "application/vnd.oci.image.layer.v1.tar"));
      }
      check_image_tree(store, "d:1", scratch / ("m-" + layout + comp));
      CHECK(stdfs::is_empty(store / "tmp"));
    }
  }
}

TEST_CASE("rm removes names; gc keeps what is referenced and frees the rest") {
  REQUIRE(test::is_root());
  test::ScratchTmpfs scratch;
  Sources src(scratch.path());
  auto a = scratch / "a.tar", b = scratch / "b.tar";
  REQUIRE(tool("mkimage", {"--dir", src.one.string(), "--mtime", "0", "--oci-archive", a.string()}, scratch.path())
              .exit_code == 0);
  auto args = src.layer_args();
  args.insert(args.end(), {"--mtime", "0", "--docker-archive", b.string(), "--ref", "bee:7"});
  REQUIRE(tool("mkimage", args, scratch.path()).exit_code == 0);
  auto store = scratch / "store";
  REQUIRE(fnexec_in(store, {"image", "import", a.string(), "--name", "a"}).exit_code == 0);
  auto rb = fnexec_in(store, {"image", "import", "docker-archive:" + b.string()});
  REQUIRE_MESSAGE(rb.exit_code == 0, rb.err);
  CHECK(rb.out.starts_with("bee:7 "));
  auto count = [&](const char* dir) {
    size_t n = 0;
    for ([[maybe_unused]] auto& e : stdfs::directory_iterator(store / dir)) ++n;
    return n;
  };
  CHECK(count("layers/sha256") == 2);

  auto gc0 = fnexec_in(store, {"image", "gc", "--json"});
  REQUIRE(gc0.exit_code == 0);
  CHECK(gc0.out.find("\"blobs_removed\":0,\"layers_removed\":0") != std::string::npos);

  CHECK(fnexec_in(store, {"image", "rm", "a"}).exit_code == 0);
  CHECK(fnexec_in(store, {"image", "rm", "a"}).exit_code == 125);
  auto gc1 = fnexec_in(store, {"image", "gc", "--json"});
  REQUIRE(gc1.exit_code == 0);
  // a's manifest and config go; its layer (and layer blob) is b's bottom layer and stays.
  CHECK(gc1.out.find("\"blobs_removed\":2,\"layers_removed\":0") != std::string::npos);
  auto st = image::Store::open(store);
  auto img = st->resolve("bee:7");
  REQUIRE_MESSAGE(img, img.error().message());
  check_image_tree(store, "bee:7", scratch / "m");
  CHECK(!st->resolve("a"));

  // A pin (fnexec serve pins each function's image) made by a name refuses rm of that name.
  REQUIRE(st->pin("function f", "bee:7"));
  auto refused = fnexec_in(store, {"image", "rm", img->manifest_digest.substr(7, 12)});
  CHECK(refused.exit_code == 125);
  CHECK_MESSAGE(refused.err.find("in use by function f: delete the function") != std::string::npos,
                refused.err);
  // Made by digest, it lets the name go, and gc keeps the image all the same.
  auto by_digest = st->pin("function f", img->manifest_digest);
  REQUIRE(by_digest);
  CHECK(by_digest->layers == img->layers);
  REQUIRE(st->pins()->size() == 1);
  auto rm = fnexec_in(store, {"image", "rm", img->manifest_digest.substr(7, 12)});
  REQUIRE_MESSAGE(rm.exit_code == 0, rm.err);
  CHECK(rm.out == "untagged bee:7\n");
  REQUIRE(fnexec_in(store, {"image", "gc"}).exit_code == 0);
  CHECK(st->resolve(img->manifest_digest));
  CHECK(count("layers/sha256") == 2);
  // Unpinned, it goes.
  REQUIRE(st->unpin("function f"));
  CHECK(st->pins()->empty());
  REQUIRE(fnexec_in(store, {"image", "gc"}).exit_code == 0);
  CHECK(count("layers/sha256") == 0);
  CHECK(count("blobs/sha256") == 0);
}
