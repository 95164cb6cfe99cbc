// Where a bench run keeps its things: a private tmpfs (image store, peers' rootfs, OCI bundles,
// sandbox mount point), unmounted with everything in it when the run ends.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "image/store.h"
#include "util/error.h"

namespace fnexec::bench {

class ScratchTmpfs {
 public:
  // A tmpfs on a fresh directory below parent: tmpfs keeps trusted.* xattrs and the 0/0 devices
  // overlay whiteouts need, and avoids ext4's slow-down after large deletes.
  static Result<ScratchTmpfs> mount(const std::filesystem::path& parent, const std::string& size);
  ScratchTmpfs(ScratchTmpfs&& o) noexcept : path_(std::exchange(o.path_, {})) {}
  ScratchTmpfs& operator=(ScratchTmpfs&&) = delete;
  ~ScratchTmpfs();
  const std::filesystem::path& path() const { return path_; }

 private:
  explicit ScratchTmpfs(std::filesystem::path p) : path_(std::move(p)) {}
  std::filesystem::path path_;
};

// rootfs-tools/mkimage: explicit path, $FNEXEC_MKIMAGE, next to the fnexec binary's tree
// (build/fnexec → rootfs-tools/), /usr/lib/fnexec/mkimage, or fnexec-mkimage in PATH.
Result<std::filesystem::path> find_mkimage(const std::optional<std::string>& explicit_path);

// Builds the default bench image (busybox-static) with mkimage as an oci-archive at archive, which
// stays there (--via-api uploads it to the daemon), and imports it into store.
Result<image::ResolvedImage> build_busybox_image(image::Store& store, const std::filesystem::path& mkimage,
                                                 const std::filesystem::path& archive);

// The image's layers merged (overlay for several, the layer itself for one) and copied to dest
// with the mount points the peers need (proc, dev, sys, tmp), so no peer ever writes to the store.
Result<> copy_rootfs(const image::ResolvedImage& image, const std::filesystem::path& work,
                     const std::filesystem::path& dest);

}  // namespace fnexec::bench
