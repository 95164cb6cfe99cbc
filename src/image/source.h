// Where an import reads from: an OCI layout directory as it is, or an oci-archive / docker-archive
// tarball staged (once, without interpretation) into a directory of the store's temp area, so that
// its blobs can later be renamed into the store instead of copied.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <string_view>

#include "util/error.h"

namespace fnexec::image {

class ImageSource {
 public:
  enum class Kind { oci_layout, oci_archive, docker_archive };

  // spec: oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF] or a plain path.
  // Archives are staged below staging_dir (an empty directory on the store's filesystem).
  static Result<ImageSource> open(std::string_view spec, const std::filesystem::path& staging_dir);

  Kind kind() const { return kind_; }
  const std::string& ref() const { return ref_; }      // the :REF part, may be empty
  const std::filesystem::path& path() const { return path_; }
  // Staged files belong to the import and may be renamed away; a layout's files may not.
  bool movable() const { return kind_ != Kind::oci_layout; }

  // The file holding NAME ("index.json", "blobs/sha256/<hex>", "<id>/layer.tar"), links followed.
  Result<std::filesystem::path> file(std::string_view name) const;

 private:
  Kind kind_ = Kind::oci_layout;
  std::filesystem::path path_;
  std::string ref_;
  std::map<std::string, std::filesystem::path> staged_;  // archive name -> staged file
  std::map<std::string, std::string> links_;            // archive name -> archive name it points to
  Result<> stage(const std::filesystem::path& staging_dir);
};

}  // namespace fnexec::image
