#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "util/error.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/rooted.h"
#include "util/unique_fd.h"

using namespace fnexec;

TEST_CASE("Error::message names what, on what, and errno") {
  Error e{ErrorKind::internal, ENOENT, "open", "/x/y", {}};
  CHECK(e.message() == "cannot open /x/y: No such file or directory");
  Error d{ErrorKind::invalid, 0, "mount overlay", "for image sha256:ab", "lowerdir list too long (130 layers)"};
  CHECK(d.message() == "cannot mount overlay for image sha256:ab: lowerdir list too long (130 layers)");
  d.context("run fn-hello:1");
  CHECK(d.message().starts_with("cannot run fn-hello:1: mount overlay"));
}

static Result<int> half(int x) {
  if (x % 2) return fail(ErrorKind::invalid, "halve", std::to_string(x), "odd");
  return x / 2;
}
static Result<int> quarter(int x) {
  int h = FNEXEC_TRY(half(x));
  return FNEXEC_TRY(half(h));
}

TEST_CASE("FNEXEC_TRY propagates errors and values") {
  CHECK(*quarter(8) == 2);
  auto r = quarter(6);
  REQUIRE(!r);
  CHECK(r.error().on == "3");
}

TEST_CASE("UniqueFd closes once and moves") {
  int raw = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  REQUIRE(raw >= 0);
  {
    UniqueFd a(raw);
    UniqueFd b(std::move(a));
    CHECK(!a);
    CHECK(b.get() == raw);
  }
  CHECK(::fcntl(raw, F_GETFD) == -1);
}

TEST_CASE("TempDir removes its tree; write_file_atomic replaces") {
  std::filesystem::path kept;
  {
    auto t = fs::TempDir::make("/tmp", "fnexec-test-");
    REQUIRE(t);
    kept = t->path();
    REQUIRE(fs::write_file_atomic(kept / "a", "one"));
    REQUIRE(fs::write_file_atomic(kept / "a", "two"));
    CHECK(*fs::read_file(kept / "a") == "two");
  }
  CHECK(!std::filesystem::exists(kept));
  CHECK(fs::read_file("/nonexistent/x").error().kind == ErrorKind::not_found);
}

TEST_CASE("write_output_file replaces a regular file but writes into a FIFO in place (--report /dev/null)") {
  auto t = fs::TempDir::make("/tmp", "fnexec-test-output-");
  REQUIRE(t);
  auto regular = t->path() / "r.json", fifo = t->path() / "fifo";
  REQUIRE(fs::write_output_file(regular, "one"));
  REQUIRE(fs::write_output_file(regular, "two"));
  CHECK(*fs::read_file(regular) == "two");
  // A FIFO stands for /dev/null and /dev/stderr: renaming over it would leave a regular file there.
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  UniqueFd reader(::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  REQUIRE(reader);
  REQUIRE(fs::write_output_file(fifo, "record"));
  char buf[16] = {};
  CHECK(::read(reader.get(), buf, sizeof buf) == 6);
  CHECK(std::string(buf) == "record");
  struct stat st{};
  REQUIRE(::stat(fifo.c_str(), &st) == 0);
  CHECK(S_ISFIFO(st.st_mode));
}

static Result<> check_even(int x) {
  if (x % 2) return fail(ErrorKind::invalid, "check", std::to_string(x), "odd");
  return {};
}
static Result<int> twice_checked(int x) {
  FNEXEC_TRY(check_even(x));
  return x * 2;
}

TEST_CASE("FNEXEC_TRY works on Result<void>") {
  CHECK(*twice_checked(4) == 8);
  CHECK(!twice_checked(3));
}

TEST_CASE("journal priority prefixes: only when JOURNAL_STREAM names the very fd") {
  CHECK(fnexec::log::syslog_priority(spdlog::level::err) == 3);
  CHECK(fnexec::log::syslog_priority(spdlog::level::warn) == 4);
  CHECK(fnexec::log::syslog_priority(spdlog::level::info) == 6);
  CHECK(fnexec::log::syslog_priority(spdlog::level::debug) == 7);
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  fnexec::UniqueFd r(fds[0]), w(fds[1]);
  struct stat st {};
  REQUIRE(::fstat(w.get(), &st) == 0);
  std::string mine = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
  CHECK(fnexec::log::is_journal_stream(mine.c_str(), w.get()));
  CHECK(!fnexec::log::is_journal_stream(nullptr, w.get()));
  CHECK(!fnexec::log::is_journal_stream("", w.get()));
  CHECK(!fnexec::log::is_journal_stream((mine + "x").c_str(), w.get()));
  std::string other = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino + 1);
  CHECK(!fnexec::log::is_journal_stream(other.c_str(), w.get()));  // a stream the service's parent had
  UniqueFd null(::open("/dev/null", O_WRONLY | O_CLOEXEC));
  CHECK(!fnexec::log::is_journal_stream(mine.c_str(), null.get()));
}

TEST_CASE("rooted reads resolve symlinks and .. inside the root, never above it") {
  auto tmp = fnexec::fs::TempDir::make("/tmp", "fnexec-sec-hostile-rooted-");
  REQUIRE(tmp);
  const auto& root = tmp->path();
  std::filesystem::create_directories(root / "real");
  REQUIRE(fnexec::fs::write_file_atomic(root / "real/passwd", "inside\n"));
  std::filesystem::create_symlink("/etc", root / "etc");                        // absolute: the root's /etc
  std::filesystem::create_symlink("../../../../../etc/passwd", root / "climb");  // clamps at the root
  std::filesystem::create_symlink("/real", root / "moved");
  std::filesystem::create_directory_symlink("/real/passwd", root / "real/link");
  REQUIRE(::mkfifo((root / "fifo").c_str(), 0644) == 0);
  auto etc = fnexec::rooted::read_file_in_root(root, "etc/passwd");  // root/etc -> root/etc: a loop
  CHECK(!etc);
  CHECK(etc.error().err == ELOOP);
  auto climb = fnexec::rooted::read_file_in_root(root, "climb");  // root/etc/passwd: the loop again
  CHECK((!climb || !*climb));
  CHECK(*fnexec::rooted::read_file_in_root(root, "moved/passwd") == std::optional<std::string>("inside\n"));
  CHECK(*fnexec::rooted::read_file_in_root(root, "/real/link") == std::optional<std::string>("inside\n"));
  CHECK(*fnexec::rooted::read_file_in_root(root, "../../real/passwd") == std::optional<std::string>("inside\n"));
  CHECK(!*fnexec::rooted::read_file_in_root(root, "absent"));
  CHECK(!*fnexec::rooted::read_file_in_root(root, "fifo"));  // not a regular file: not opened, no hang
  CHECK(!*fnexec::rooted::read_file_in_root(root, "real"));
  auto link = fnexec::rooted::lstat_in_root(root, "moved");
  REQUIRE(link);
  CHECK(S_ISLNK((*link)->st_mode));
}
