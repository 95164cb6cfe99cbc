// TLS on the daemon's TCP listener, with clients fnexec did not write: curl --cacert and the AWS CLI
// (SigV4) against a CA and server certificate the test makes with the openssl command.
#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>

#include "test_pki.h"
#include "test_serve_fixture.h"

using namespace fnexec;
using namespace fnexec::test::serve;

namespace {

constexpr const char* kToken = "0123456789abcdef0123456789abcdef";

struct TlsDaemon : Daemon {
  uint16_t port = free_tcp_port();
  stdfs::path token_file;
  TlsDaemon() {
    token_file = scratch() / "token";
    write_file(token_file, std::string(kToken) + "\n", 0600);
  }
  std::vector<std::string> flags(const stdfs::path& cert, const stdfs::path& key) const {
    return {"--listen", fmt::format("127.0.0.1:{}", port), "--token-file", token_file.string(),
            "--tls-cert", cert.string(), "--tls-key", key.string()};
  }
  std::string url(const std::string& path, const char* scheme = "https") const {
    return fmt::format("{}://127.0.0.1:{}{}", scheme, port, path);
  }
  Http get(const std::string& path, std::vector<std::string> extra = {}) const {
    extra.insert(extra.begin(), {"--tcp", url(path), "--cacert", pki().ca.string()});
    return curl("GET", path, {}, extra);
  }
};

int connect_loopback(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  return fd;
}

}  // namespace

TEST_SUITE("serve") {
  TEST_CASE("TLS: an unreadable, non-PEM or mismatched certificate or key stops serve with the file named") {
    TlsDaemon d;
    auto garbage = d.scratch() / "garbage.pem";
    write_file(garbage, "not a certificate\n");
    struct Case {
      std::vector<std::string> flags;
      std::string says;
    };
    std::vector<Case> cases = {
        {d.flags(d.scratch() / "missing.pem", pki().key), "read TLS certificate (tls_cert)"},
        {d.flags(garbage, pki().key), "load TLS certificate (tls_cert) " + garbage.string()},
        {d.flags(pki().cert, garbage), "load TLS private key (tls_key)"},
        {d.flags(pki().cert, pki().other_key), "does not belong to the certificate"},
        {{"--listen", fmt::format("127.0.0.1:{}", d.port), "--token-file", d.token_file.string(), "--tls-cert",
          pki().cert.string()},
         "set both"},
        {{"--tls-cert", pki().cert.string(), "--tls-key", pki().key.string()}, "set listen"},
    };
    for (const auto& c : cases) {
      auto [rc, log] = d.start_expecting_failure(c.flags);
      INFO(log);
      CHECK(rc == 125);
      CHECK(contains(log, c.says));
    }
  }

  TEST_CASE("TLS: curl --cacert with the bearer token; TLS 1.1, plain HTTP and a stalled handshake are refused") {
    TlsDaemon d;
    d.start(d.flags(pki().cert, pki().key));
    CHECK(contains(d.log(), "tls=on"));
    CHECK(!contains(d.log(), "tcp_without_tls"));

    auto ok = d.get("/v1/functions", {"-H", std::string("Authorization: Bearer ") + kToken});
    CHECK(ok.status == 200);
    CHECK(d.get("/v1/functions").status == 401);
    // The certificate is checked by the client: without the CA curl refuses it.
    auto untrusted = test::run({"curl", "-sS", "-o", "/dev/null", d.url("/v1/functions")});
    CHECK(untrusted.exit_code == 60);
    // TLS 1.1 and older: no handshake.
    auto old = test::run({"curl", "-sS", "-o", "/dev/null", "--cacert", pki().ca.string(), "--tlsv1.1", "--tls-max",
                          "1.1", d.url("/v1/functions")});
    CHECK(old.exit_code != 0);
    // Plain HTTP to the TLS port: a 400 that says what to change, then the connection closes.
    auto plain = d.curl("GET", "/v1/functions", {}, {"--tcp", d.url("/v1/functions", "http")});
    CHECK(plain.status == 400);
    CHECK(contains(plain.body, "this port speaks TLS"));

    // Handshake slowloris: a peer that sends half a ClientHello and stalls holds only its own
    // connection; others are served meanwhile.
    std::vector<UniqueFd> stalled;
    for (int i = 0; i < 8; ++i) {
      stalled.emplace_back(connect_loopback(d.port));
      REQUIRE(::write(stalled.back().get(), "\x16\x03\x01\x02\x00\x01", 6) == 6);
    }
    CHECK(d.get("/v1/functions", {"-H", std::string("Authorization: Bearer ") + kToken}).status == 200);
    CHECK(d.curl("GET", "/v1/functions").status == 200);  // the unix socket too
    stalled.clear();
    CHECK(d.stop() == 0);
  }

  TEST_CASE("TLS: plain TCP with a token still serves, and warns that the token crosses in clear") {
    TlsDaemon d;
    d.start({"--listen", fmt::format("127.0.0.1:{}", d.port), "--token-file", d.token_file.string()});
    auto ok = d.curl("GET", "/v1/functions", {},
                     {"--tcp", d.url("/v1/functions", "http"), "-H", std::string("Authorization: Bearer ") + kToken});
    CHECK(ok.status == 200);
    CHECK(contains(d.log(), "event=tcp_without_tls"));
  }
}

TEST_SUITE("serve-lambda") {
  TEST_CASE("TLS: the AWS CLI signs with SigV4 over https with the test CA (AWS_CA_BUNDLE)") {
    if (!stdfs::exists("/usr/bin/aws")) {
      MESSAGE("skipped: Debian's awscli is not installed (scripts/install-deps.sh)");
      return;
    }
    const std::string key_id = "AKIDFNEXECTLS", secret = "tls-sigv4-test-secret-0123456789";
    uint16_t port = free_tcp_port();
    InvokeDaemon d(fmt::format("listen = 127.0.0.1:{}\naccess_key = {} {}\nlambda_region = eu-west-3\n"
                               "tls_cert = {}\ntls_key = {}\n",
                               port, key_id, secret, pki().cert.string(), pki().key.string()));
    d.create("echo", "cat", R"("min_warm":0)");
    auto home = d.scratch() / "aws-home";
    stdfs::create_directories(home);
    test::ProcOptions o;
    o.env = {{"AWS_ACCESS_KEY_ID", key_id},
             {"AWS_SECRET_ACCESS_KEY", secret},
             {"AWS_DEFAULT_REGION", "eu-west-3"},
             {"AWS_CONFIG_FILE", "/dev/null"},
             {"AWS_SHARED_CREDENTIALS_FILE", "/dev/null"},
             {"AWS_EC2_METADATA_DISABLED", "true"},
             {"AWS_CA_BUNDLE", pki().ca.string()},
             {"AWS_PAGER", ""},
             {"HOME", home.string()}};
    auto out = home / "out.json";
    auto endpoint = fmt::format("https://127.0.0.1:{}", port);
    auto inv = test::run({"/usr/bin/aws", "lambda", "invoke", "--endpoint-url", endpoint, "--function-name", "echo",
                          "--cli-binary-format", "raw-in-base64-out", "--payload", R"({"tls":true})", out.string()},
                         o);
    INFO(inv.out << inv.err);
    CHECK(inv.exit_code == 0);
    CHECK(slurp(out) == R"({"tls":true})");
    o.env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret-not-the-secret";
    auto denied = test::run({"/usr/bin/aws", "lambda", "list-functions", "--endpoint-url", endpoint}, o);
    CHECK(denied.exit_code != 0);
    CHECK(contains(denied.err, "InvalidSignatureException"));
  }
}
