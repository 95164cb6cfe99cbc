#include "registry/pull.h"

#include <unistd.h>

#include "registry/client.h"
#include "registry/credentials.h"
#include "registry/reference.h"

namespace fnexec::registry {

Result<image::Platform> parse_platform(std::string_view text) {
  image::Platform p;
  std::string_view rest = text;
  auto next = [&] {
    auto slash = rest.find('/');
    std::string part(rest.substr(0, slash));
    rest = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
    return part;
  };
  p.os = next();
  p.architecture = next();
  p.variant = next();
  if (p.os.empty() || p.architecture.empty() || !rest.empty())
    return fail(ErrorKind::invalid, "read --platform", std::string(text), "want OS/ARCH[/VARIANT], e.g. linux/arm64/v8");
  return p;
}

Result<image::ResolvedImage> pull(image::Store& store, const PullRequest& request, image::PullResult* result) {
  Reference ref = FNEXEC_TRY(parse_reference(request.reference));
  ClientOptions options;
  options.tls_verify = request.tls_verify;
  options.cert_dir = request.cert_dir;
  if (options.cert_dir.empty() && !request.certs_root.empty())
    if (std::string dir = request.certs_root + "/" + ref.registry; ::access(dir.c_str(), F_OK) == 0) options.cert_dir = dir;
  if (!request.creds.empty()) options.credentials = FNEXEC_TRY(parse_creds(request.creds));
  else options.credentials = FNEXEC_TRY(lookup_credentials(ref.registry, request.auth_file));
  auto client = FNEXEC_TRY(Client::make(ref, std::move(options)));
  image::PullOptions po;
  po.name = request.name;
  po.reference = ref.manifest_ref();
  po.default_name = ref.store_name();
  po.platform = request.platform.empty() ? image::host_platform() : FNEXEC_TRY(parse_platform(request.platform));
  po.parallel_layers = request.parallel_layers;
  po.progress = request.progress;
  return store.pull(*client, po, result);
}

}  // namespace fnexec::registry
