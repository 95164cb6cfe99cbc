// The throwaway PKI of the TLS tests (test_serve_tls.cc, test_serve_lambda.cc): made once per test
// binary with the openssl command, on a tmpfs of its own.
#pragma once

#include "test_serve_fixture.h"

namespace fnexec::test::serve {

// A throwaway CA, a server certificate for 127.0.0.1 signed by it, and a key of another pair.
struct TestPki {
  test::ScratchTmpfs dir{"4m"};
  stdfs::path ca = dir / "ca.pem", cert = dir / "server.pem", key = dir / "server.key", other_key = dir / "other.key";

  TestPki() {
    auto openssl = [&](std::vector<std::string> args) {
      args.insert(args.begin(), "openssl");
      auto r = test::run(args);
      REQUIRE_MESSAGE(r.exit_code == 0, "openssl " << args[1] << ": " << r.err);
    };
    const std::vector<std::string> ec = {"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"};
    auto with = [](std::vector<std::string> a, const std::vector<std::string>& b) {
      a.insert(a.end(), b.begin(), b.end());
      return a;
    };
    openssl(with({"req", "-x509", "-days", "2", "-subj", "/CN=fnexec-sec-devtls-test-ca", "-keyout",
                  (dir / "ca.key").string(), "-out", ca.string()},
                 ec));
    openssl(with({"req", "-subj", "/CN=127.0.0.1", "-keyout", key.string(), "-out", (dir / "server.csr").string()}, ec));
    write_file(dir / "san.ext", "subjectAltName=IP:127.0.0.1\n");
    openssl({"x509", "-req", "-days", "2", "-in", (dir / "server.csr").string(), "-CA", ca.string(), "-CAkey",
             (dir / "ca.key").string(), "-CAcreateserial", "-extfile", (dir / "san.ext").string(), "-out",
             cert.string()});
    openssl({"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", other_key.string()});
  }
};

inline TestPki& pki() {
  static TestPki p;
  return p;
}

}  // namespace fnexec::test::serve
