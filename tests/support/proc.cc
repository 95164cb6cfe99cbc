#include "support/proc.h"

#include "support/fixtures.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "support/fixtures.h"

extern char** environ;

namespace fnexec::test {

namespace {

void set_nonblock(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

struct Piped {
  pid_t pid = -1;
  int in = -1, out = -1, err = -1;  // our ends, non-blocking
  std::chrono::steady_clock::time_point start;
};

// Spawns argv with pipes on its stdin, stdout and stderr; env adds to the inherited environment.
Piped spawn_piped(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env) {
  int in[2], out[2], err[2];
  if (::pipe2(in, O_CLOEXEC) || ::pipe2(out, O_CLOEXEC) || ::pipe2(err, O_CLOEXEC))
    throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);

  std::vector<std::string> env_store;
  for (char** e = environ; *e; ++e) {
    std::string kv(*e);
    auto key = kv.substr(0, kv.find('='));
    if (!env.count(key)) env_store.push_back(kv);
  }
  for (auto& [k, v] : env) env_store.push_back(k + "=" + v);
  std::vector<char*> envp, args;
  for (auto& s : env_store) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_copy = argv;
  for (auto& s : argv_copy) args.push_back(s.data());
  args.push_back(nullptr);

  Piped p;
  p.start = std::chrono::steady_clock::now();
  int rc = ::posix_spawnp(&p.pid, args[0], &fa, nullptr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  ::close(in[0]);
  ::close(out[1]);
  ::close(err[1]);
  if (rc != 0) {
    ::close(in[1]);
    ::close(out[0]);
    ::close(err[0]);
    throw std::runtime_error("spawn " + argv[0] + ": " + std::strerror(rc));
  }
  p.in = in[1];
  p.out = out[0];
  p.err = err[0];
  set_nonblock(p.in);
  set_nonblock(p.out);
  set_nonblock(p.err);
  return p;
}

// Appends what fd has to offer; closes it and sets it to -1 at EOF.
void drain(int& fd, std::string& into) {
  char buf[65536];
  for (;;) {
    ssize_t m = ::read(fd, buf, sizeof buf);
    if (m > 0) {
      into.append(buf, static_cast<size_t>(m));
      continue;
    }
    if (m < 0 && errno == EAGAIN) return;
    ::close(fd);
    fd = -1;
    return;
  }
}

int reap(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

ProcResult run(const std::vector<std::string>& argv, const ProcOptions& options) {
  Piped child = spawn_piped(argv, options.env);
  pid_t pid = child.pid;
  auto start = child.start;
  ProcResult r;
  size_t written = 0;
  int in_fd = child.in;
  if (options.stdin_data.empty()) {
    ::close(in_fd);
    in_fd = -1;
  }
  int out_fd = child.out, err_fd = child.err;
  bool killed = false;
  while (out_fd >= 0 || err_fd >= 0) {
    pollfd pfds[3];
    int n = 0;
    int idx_in = -1, idx_out = -1, idx_err = -1;
    if (in_fd >= 0) { idx_in = n; pfds[n++] = {in_fd, POLLOUT, 0}; }
    if (out_fd >= 0) { idx_out = n; pfds[n++] = {out_fd, POLLIN, 0}; }
    if (err_fd >= 0) { idx_err = n; pfds[n++] = {err_fd, POLLIN, 0}; }
    int timeout = -1;
    if (options.kill_after && !killed) {
      auto left = *options.kill_after - std::chrono::duration_cast<std::chrono::milliseconds>(
                                            std::chrono::steady_clock::now() - start);
      timeout = left.count() > 0 ? static_cast<int>(left.count()) : 0;
    }
    int pr = ::poll(pfds, static_cast<nfds_t>(n), timeout);
    if (pr < 0 && errno == EINTR) continue;
    if (pr == 0 && options.kill_after && !killed) {
      ::kill(pid, SIGKILL);
      killed = true;
      continue;
    }
    if (idx_in >= 0 && pfds[idx_in].revents) {
      ssize_t w = ::write(in_fd, options.stdin_data.data() + written, options.stdin_data.size() - written);
      if (w > 0) written += static_cast<size_t>(w);
      if (w < 0 && errno != EAGAIN) written = options.stdin_data.size();  // EPIPE: reader is gone
      if (written == options.stdin_data.size()) {
        ::close(in_fd);
        in_fd = -1;
      }
    }
    if (idx_out >= 0 && pfds[idx_out].revents) drain(out_fd, r.out);
    if (idx_err >= 0 && pfds[idx_err].revents) drain(err_fd, r.err);
  }
  if (in_fd >= 0) ::close(in_fd);
  r.exit_code = reap(pid);
  r.wall = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start);
  return r;
}

Conversation::Conversation(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env) {
  Piped p = spawn_piped(argv, env);
  pid_ = p.pid;
  in_ = p.in;
  out_ = p.out;
  err_ = p.err;
}

Conversation::~Conversation() {
  for (int fd : {in_, out_, err_})
    if (fd >= 0) ::close(fd);
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    reap(pid_);
  }
}

bool Conversation::exchange(std::string_view input, const std::function<bool(std::string_view)>& want,
                            std::chrono::milliseconds limit) {
  auto until = std::chrono::steady_clock::now() + limit;
  bool satisfied = false;
  while (!input.empty() || (!satisfied && out_ >= 0)) {
    pollfd pfds[3];
    int n = 0, idx_in = -1, idx_out = -1, idx_err = -1;
    if (!input.empty() && in_ >= 0) idx_in = n, pfds[n++] = {in_, POLLOUT, 0};
    if (out_ >= 0) idx_out = n, pfds[n++] = {out_, POLLIN, 0};
    if (err_ >= 0) idx_err = n, pfds[n++] = {err_, POLLIN, 0};
    if (input.empty() && out_ < 0) break;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      throw std::runtime_error("the child did not answer within " + std::to_string(limit.count()) + " ms");
    int pr = ::poll(pfds, static_cast<nfds_t>(n), static_cast<int>(left.count()));
    if (pr < 0 && errno == EINTR) continue;
    if (idx_in >= 0 && pfds[idx_in].revents) {
      ssize_t w = ::write(in_, input.data(), input.size());
      if (w > 0) input.remove_prefix(static_cast<size_t>(w));
      if (w < 0 && errno != EAGAIN) input = {};  // EPIPE: the reader is gone
    }
    if (idx_err >= 0 && pfds[idx_err].revents) drain(err_, err_text_);
    if (idx_out >= 0 && pfds[idx_out].revents) {
      std::string chunk;
      drain(out_, chunk);
      if (!chunk.empty() && want(chunk)) satisfied = true;
    }
  }
  return satisfied;
}

void Conversation::close_stdin() {
  if (in_ >= 0) ::close(in_);
  in_ = -1;
}

int Conversation::wait(std::string* rest_of_stdout) {
  close_stdin();
  std::string rest;
  exchange({}, [&rest](std::string_view chunk) {
    rest += chunk;
    return false;
  });
  while (err_ >= 0) {
    pollfd pfd{err_, POLLIN, 0};
    if (::poll(&pfd, 1, 120000) <= 0) break;
    drain(err_, err_text_);
  }
  int code = reap(pid_);
  pid_ = -1;
  if (rest_of_stdout) *rest_of_stdout = std::move(rest);
  return code;
}

ProcResult fnexec(const std::vector<std::string>& args, const ProcOptions& options) {
  std::vector<std::string> argv{fnexec_bin().string()};
  argv.insert(argv.end(), args.begin(), args.end());
  auto result = run(argv, options);
  // `fnexec run` leaves its PID 1 to us (a subreaper): reaped here, orphans never pile up as zombies
  // that a later test's waitpid(-1) would take out of its own process count.
  reap_adopted_sandbox_inits();
  return result;
}

}  // namespace fnexec::test
