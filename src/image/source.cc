#include "image/source.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <memory>
#include <vector>

#include "image/unpack.h"
#include "util/unique_fd.h"

namespace fnexec::image {

namespace {

bool exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

// Resolves a symlink target inside the archive lexically; empty when it leaves the archive.
std::string resolve_in_archive(std::string_view link_name, std::string_view target) {
  if (target.starts_with('/')) return {};
  size_t slash = link_name.rfind('/');
  auto dir = slash == std::string_view::npos ? std::string_view{} : link_name.substr(0, slash);
  return resolve_lexically(dir, target).value_or("");
}

}  // namespace

Result<ImageSource> ImageSource::open(std::string_view spec, const std::filesystem::path& staging_dir) {
  ImageSource src;
  std::string_view rest = spec;
  std::optional<Kind> kind;
  if (spec.starts_with("oci:")) {
    kind = Kind::oci_layout;
    rest = spec.substr(4);
  } else if (spec.starts_with("oci-archive:")) {
    kind = Kind::oci_archive;
    rest = spec.substr(12);
  } else if (spec.starts_with("docker-archive:")) {
    kind = Kind::docker_archive;
    rest = spec.substr(15);
  }
  std::string path(rest);
  if (kind && !exists(path)) {
    size_t colon = rest.rfind(':');
    if (colon != std::string_view::npos && exists(std::string(rest.substr(0, colon)))) {
      path = rest.substr(0, colon);
      src.ref_ = rest.substr(colon + 1);
    }
  }
  struct stat st;
  if (path.empty() || ::stat(path.c_str(), &st) != 0)
    return fail(ErrorKind::not_found, "open image source", std::string(spec),
                "no such file or directory (want oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF])");
  src.path_ = std::filesystem::absolute(path);
  if (S_ISDIR(st.st_mode)) {
    if (kind && *kind != Kind::oci_layout)
      return fail(ErrorKind::invalid, "open image source", std::string(spec), "is a directory, not an archive");
    if (!exists(path + "/index.json"))
      return fail(ErrorKind::invalid, "open image source", std::string(spec),
                  "not an OCI image layout (no index.json)");
    src.kind_ = Kind::oci_layout;
    return src;
  }
  if (kind == Kind::oci_layout)
    return fail(ErrorKind::invalid, "open image source", std::string(spec),
                "oci: wants a layout directory; use oci-archive: for a tarball");
  src.kind_ = Kind::oci_archive;  // until the contents say which archive it is
  FNEXEC_TRY(src.stage(staging_dir));
  if (kind) {
    src.kind_ = *kind;
  } else if (src.file("index.json")) {
    src.kind_ = Kind::oci_archive;
  } else if (src.file("manifest.json")) {
    src.kind_ = Kind::docker_archive;
  } else {
    return fail(ErrorKind::invalid, "open image source", std::string(spec),
                "neither an oci-archive (index.json) nor a docker-archive (manifest.json)");
  }
  return src;
}

Result<> ImageSource::stage(const std::filesystem::path& staging_dir) {
  struct Free {
    void operator()(struct archive* a) const { archive_read_free(a); }
  };
  std::unique_ptr<struct archive, Free> a(archive_read_new());
  archive_read_support_filter_gzip(a.get());
  archive_read_support_filter_zstd(a.get());
  archive_read_support_format_tar(a.get());
  std::string p = path_.string();
  auto bad = [&](std::string_view detail) {
    return fail(ErrorKind::corrupt, "read image archive", p, std::string(detail));
  };
  if (archive_read_open_filename(a.get(), p.c_str(), 1 << 20) != ARCHIVE_OK)
    return bad(archive_error_string(a.get()) ? archive_error_string(a.get()) : "not a tar archive");
  size_t n = 0;
  for (;;) {
    struct archive_entry* e;
    int r = archive_read_next_header(a.get(), &e);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) return bad(archive_error_string(a.get()) ? archive_error_string(a.get()) : "bad header");
    const char* raw = archive_entry_pathname(e);
    if (!raw) return bad("entry without a name");
    auto name = clean_entry_path(raw);
    if (!name) return std::unexpected(name.error().context("read image archive " + p));
    if (const char* hl = archive_entry_hardlink(e)) {
      auto target = clean_entry_path(hl);
      if (!target) return std::unexpected(target.error().context("read image archive " + p));
      links_[*name] = *target;
      continue;
    }
    if (archive_entry_filetype(e) == AE_IFLNK) {
      std::string target = resolve_in_archive(*name, archive_entry_symlink(e) ? archive_entry_symlink(e) : "");
      if (!target.empty()) links_[*name] = target;
      continue;
    }
    if (archive_entry_filetype(e) != AE_IFREG) continue;
    auto staged = staging_dir / std::to_string(n++);
    UniqueFd fd(::open(staged.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd) return fail_errno("create", staged.string());
    if (archive_read_data_into_fd(a.get(), fd.get()) != ARCHIVE_OK)
      return bad(std::string(*name) + ": " +
                 (archive_error_string(a.get()) ? archive_error_string(a.get()) : "cannot read entry data"));
    staged_[*name] = staged;
    links_.erase(*name);
  }
  return {};
}

Result<std::filesystem::path> ImageSource::file(std::string_view name) const {
  std::string n = FNEXEC_TRY(clean_entry_path(name));
  if (kind_ == Kind::oci_layout) {
    auto p = path_ / n;
    if (!exists(p.string()))
      return fail(ErrorKind::not_found, "find " + n + " in", path_.string(), "the layout has no such file");
    return p;
  }
  for (int hops = 0; hops < 16; ++hops) {
    if (auto it = staged_.find(n); it != staged_.end()) return it->second;
    auto link = links_.find(n);
    if (link == links_.end()) break;
    n = link->second;
  }
  return fail(ErrorKind::not_found, "find " + n + " in", path_.string(), "the archive has no such file");
}

}  // namespace fnexec::image
