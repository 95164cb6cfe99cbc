// Parsing of index, manifest, config and docker-archive manifest.json: good and bad documents.
#include <doctest/doctest.h>

#include <string>

#include "image/oci.h"

using namespace fnexec;
using namespace fnexec::image;

namespace {

const std::string kDigestA = "sha256:" + std::string(64, 'a');
const std::string kDigestB = "sha256:" + std::string(64, 'b');
const std::string kDigestC = "sha256:" + std::string(64, 'c');

std::string manifest_json(std::string_view media_type, std::string_view config_mt, std::string_view layer_mt,
                          std::string_view layer_digest = {}) {
  return R"({"schemaVersion":2,"mediaType":")" + std::string(media_type) + R"(","config":{"mediaType":")" +
         std::string(config_mt) + R"(","digest":")" + kDigestA + R"(","size":12},"layers":[{"mediaType":")" +
         std::string(layer_mt) + R"(","digest":")" + std::string(layer_digest.empty() ? kDigestB : layer_digest) +
         R"(","size":345}]})";
}

}  // namespace

TEST_CASE("OCI and Docker manifests parse with their descriptors") {
  auto m = parse_manifest(manifest_json(media::oci_manifest, media::oci_config, media::oci_layer_gzip));
  REQUIRE(m);
  CHECK(m->media_type == media::oci_manifest);
  CHECK(m->config.digest == kDigestA);
  CHECK(m->config.size == 12);
  REQUIRE(m->layers.size() == 1);
  CHECK(m->layers[0].size == 345);
  CHECK(m->layers[0].media_type == media::oci_layer_gzip);

  auto d = parse_manifest(manifest_json(media::docker_manifest, media::docker_config,
                                        "application/vnd.docker.image.rootfs.diff.tar.gzip"),
                          media::docker_manifest);
  REQUIRE(d);
  CHECK(d->media_type == media::docker_manifest);
  CHECK(parse_manifest(manifest_json(media::oci_manifest, media::oci_config, media::oci_layer_zstd)));
  CHECK(parse_manifest(manifest_json(media::oci_manifest, media::oci_config, media::oci_layer)));
}

TEST_CASE("bad manifests are refused with the reason") {
  auto expect_corrupt = [](const std::string& json, std::string_view needle, std::string_view expected_mt = {}) {
    auto r = parse_manifest(json, expected_mt);
    REQUIRE_MESSAGE(!r, json);
    CHECK(r.error().kind == ErrorKind::corrupt);
    CHECK_MESSAGE(r.error().message().find(needle) != std::string::npos, r.error().message());
  };
  expect_corrupt("{\"schemaVersion\":2,", "not valid JSON");
  expect_corrupt("[1,2]", "not a JSON object");
  expect_corrupt("", "not valid JSON");
  expect_corrupt(R"({"schemaVersion":1,"config":{},"layers":[]})", "schemaVersion");
  expect_corrupt(manifest_json(media::oci_index, media::oci_config, media::oci_layer), "is not an image manifest");
  expect_corrupt(manifest_json(media::oci_manifest, "application/vnd.oci.image.layer.v1.tar", media::oci_layer),
                 "config media type");
  expect_corrupt(manifest_json(media::oci_manifest, media::oci_config, "text/plain"), "not supported");
  expect_corrupt(manifest_json(media::oci_manifest, media::oci_config, media::oci_layer),
                 "differs from its descriptor", media::docker_manifest);
  expect_corrupt(manifest_json(media::oci_manifest, media::oci_config, media::oci_layer,
                               "sha256:" + std::string(64, 'A')),
                 "not sha256:<64 lowercase hex>");
  expect_corrupt(manifest_json(media::oci_manifest, media::oci_config, media::oci_layer,
                               "sha512:" + std::string(128, 'a')),
                 "not sha256");
  std::string neg = manifest_json(media::oci_manifest, media::oci_config, media::oci_layer);
  neg.replace(neg.find("345"), 3, "-1");
  expect_corrupt(neg, "no valid size");
  std::string missing_layers = R"({"schemaVersion":2,"config":{"mediaType":")" + std::string(media::oci_config) +
                               R"(","digest":")" + kDigestA + R"(","size":1}})";
  expect_corrupt(missing_layers, "\"layers\"");
  expect_corrupt(std::string(5 << 20, ' '), "larger than 4 MiB");
}

TEST_CASE("an index picks by reference, then the only entry, then the host's platform") {
  std::string idx = R"({"schemaVersion":2,"manifests":[
    {"mediaType":")" + std::string(media::oci_manifest) + R"(","digest":")" + kDigestA +
                    R"(","size":1,"platform":{"os":"linux","architecture":"arm64"},
     "annotations":{"org.opencontainers.image.ref.name":"arm"}},
    {"mediaType":")" + std::string(media::oci_manifest) + R"(","digest":")" + kDigestB +
                    R"(","size":2,"platform":{"os":"linux","architecture":"amd64"}}]})";
  auto index = parse_index(idx);
  REQUIRE(index);
  REQUIRE(index->manifests.size() == 2);
  CHECK(index->manifests[0].platform->architecture == "arm64");
  const Platform amd64{"linux", "amd64", ""}, arm64{"linux", "arm64", "v8"};
  CHECK(pick_manifest(*index, {}, amd64)->digest == kDigestB);
  // A variant on one side only does not exclude a manifest.
  CHECK(pick_manifest(*index, {}, arm64)->digest == kDigestA);
  CHECK(pick_manifest(*index, "arm", amd64)->digest == kDigestA);
  auto none = pick_manifest(*index, "nope");
  REQUIRE(!none);
  CHECK(none.error().kind == ErrorKind::not_found);
  // Without a platform the host's is wanted.
  const std::string& host = host_platform().architecture;
  auto by_host = pick_manifest(*index, {});
  if (host == "amd64" || host == "arm64") {
    REQUIRE(by_host);
    CHECK(by_host->digest == (host == "amd64" ? kDigestB : kDigestA));
  } else {
    CHECK(!by_host);
  }

  Index two_arm;
  two_arm.manifests = index->manifests;
  two_arm.manifests[1].platform->architecture = "s390x";
  auto ambiguous = pick_manifest(two_arm, {}, amd64);
  REQUIRE(!ambiguous);
  CHECK(ambiguous.error().message().find("none for linux/amd64") != std::string::npos);

  // Variants narrow the choice when both sides name one.
  Index arms;
  arms.manifests = {index->manifests[0], index->manifests[0], index->manifests[1]};
  arms.manifests[0].platform = Platform{"linux", "arm", "v6"};
  arms.manifests[1].platform = Platform{"linux", "arm", "v7"};
  arms.manifests[1].digest = kDigestB;
  CHECK(pick_manifest(arms, {}, Platform{"linux", "arm", "v7"})->digest == kDigestB);
  CHECK(pick_manifest(arms, {}, Platform{"linux", "arm", "v6"})->digest == kDigestA);
  auto v5 = pick_manifest(arms, {}, Platform{"linux", "arm", "v5"});
  REQUIRE(!v5);
  CHECK(v5.error().message().find("none for linux/arm/v5; it has linux/arm/v6, linux/arm/v7, ") != std::string::npos);
  CHECK(v5.error().message().find("--platform") != std::string::npos);

  CHECK(!parse_index(R"({"schemaVersion":2,"mediaType":")" + std::string(media::oci_manifest) +
                     R"(","manifests":[]})"));
  CHECK(!parse_index(R"({"schemaVersion":2})"));
  CHECK(!parse_index(R"({"schemaVersion":2,"manifests":[{"mediaType":"x","size":1}]})"));
}

TEST_CASE("uname machine names map to OCI platforms") {
  CHECK(to_string(platform_of_machine("x86_64")) == "linux/amd64");
  CHECK(to_string(platform_of_machine("aarch64")) == "linux/arm64");
  CHECK(to_string(platform_of_machine("armv7l")) == "linux/arm/v7");
  CHECK(to_string(platform_of_machine("i686")) == "linux/386");
  CHECK(to_string(platform_of_machine("ppc64le")) == "linux/ppc64le");
  CHECK(to_string(platform_of_machine("s390x")) == "linux/s390x");
  CHECK(to_string(platform_of_machine("riscv64")) == "linux/riscv64");
  CHECK(to_string(platform_of_machine("mystery")) == "linux/mystery");
  CHECK(host_platform().os == "linux");
  CHECK(!host_platform().architecture.empty());
}

TEST_CASE("config: run settings and diff_ids; nulls are empty; bad ones refused") {
  auto c = parse_config(R"({"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:00Z",
    "config":{"Entrypoint":["/bin/sh","-c"],"Cmd":null,"Env":["A=1","PATH=/bin"],"WorkingDir":"/w","User":"1000:1000"},
    "rootfs":{"type":"layers","diff_ids":[")" + kDigestA + "\",\"" + kDigestC + R"("]}})");
  REQUIRE(c);
  CHECK(c->config.entrypoint == std::vector<std::string>{"/bin/sh", "-c"});
  CHECK(c->config.cmd.empty());
  CHECK(c->config.env.size() == 2);
  CHECK(c->config.working_dir == "/w");
  CHECK(c->config.user == "1000:1000");
  CHECK(c->config.created == "2024-01-01T00:00:00Z");
  CHECK(c->diff_ids == std::vector<std::string>{kDigestA, kDigestC});

  auto no_config = parse_config(R"({"rootfs":{"type":"layers","diff_ids":[]}})");
  REQUIRE(no_config);
  CHECK(no_config->config.entrypoint.empty());

  CHECK(!parse_config(R"({"config":{}})"));                                           // no rootfs
  CHECK(!parse_config(R"({"rootfs":{"type":"snapshots","diff_ids":[]}})"));           // wrong type
  CHECK(!parse_config(R"({"rootfs":{"type":"layers","diff_ids":["sha256:12"]}})"));   // short digest
  CHECK(!parse_config(R"({"config":{"Env":"A=1"},"rootfs":{"type":"layers","diff_ids":[]}})"));  // not array
  CHECK(!parse_config(R"({"config":{"Cmd":[1]},"rootfs":{"type":"layers","diff_ids":[]}})"));    // not strings
}

TEST_CASE("docker-archive manifest.json") {
  auto m = parse_docker_archive_manifest(
      R"([{"Config":"abc.json","RepoTags":["busybox:1"],"Layers":["l1/layer.tar","l2/layer.tar"]}])");
  REQUIRE(m);
  REQUIRE(m->size() == 1);
  CHECK((*m)[0].config == "abc.json");
  CHECK((*m)[0].repo_tags == std::vector<std::string>{"busybox:1"});
  CHECK((*m)[0].layers.size() == 2);
  CHECK(!parse_docker_archive_manifest("[]"));
  CHECK(!parse_docker_archive_manifest(R"({"Config":"x"})"));
  CHECK(!parse_docker_archive_manifest(R"([{"Layers":[]}])"));
}

TEST_CASE("digest syntax and json_quote") {
  CHECK(is_valid_digest(kDigestA));
  CHECK(!is_valid_digest("sha256:" + std::string(63, 'a')));
  CHECK(!is_valid_digest("sha256:" + std::string(63, 'a') + "g"));
  CHECK(!is_valid_digest("md5:" + std::string(64, 'a')));
  CHECK(json_quote("a\"b\\c\n\x01") == "\"a\\\"b\\\\c\\n\\u0001\"");
}
