#pragma once
// Every output goes through a temporary file in the destination directory that is fsync'ed and then
// renamed into place, so a crash or kill mid-write never leaves a truncated result or clobbers the old one.
// Also the filesystem boundary of taxon: the helpers here report failures as taxon::Error (io.*), never as
// std::filesystem::filesystem_error.
#include "taxon/core/error.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace taxon::io {

namespace fs = std::filesystem;

// Creates `dir` and any missing parents; a failure (a parent that is a file, no permission) names the directory.
inline void ensure_directory(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  TAXON_CHECK(!ec, "io.cannot-write", "cannot create directory ", dir.string(), ": ", ec.message());
}

// Whether `path` exists; an error other than "no such file" (e.g. no permission on a parent) names the path.
inline bool path_exists(const fs::path& path) {
  std::error_code ec;
  const bool found = fs::exists(path, ec);
  TAXON_CHECK(!ec, "io.cannot-read", "cannot check whether ", path.string(), " exists: ", ec.message());
  return found;
}

// Size in bytes of an existing file.
inline std::uint64_t file_size(const fs::path& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  TAXON_CHECK(ec != std::errc::no_such_file_or_directory, "io.missing-file", "file not found: ", path.string());
  TAXON_CHECK(!ec, "io.cannot-read", "cannot get the size of ", path.string(), ": ", ec.message());
  return size;
}

// Names of the directories directly inside `dir`, sorted.
inline std::vector<std::string> subdirectory_names(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code type_ec;
    if (it->is_directory(type_ec)) names.push_back(it->path().filename().string());
  }
  TAXON_CHECK(!ec, "io.cannot-read", "cannot list directory ", dir.string(), ": ", ec.message());
  std::sort(names.begin(), names.end());
  return names;
}

// `path` must be an existing file; `what` says what it is for ("weights", "image folder", ...).
inline void require_file(const fs::path& path, std::string_view what = "file") {
  std::error_code ec;
  const auto status = fs::status(path, ec);
  TAXON_CHECK(fs::exists(status), "io.missing-file", what, " not found: ", path.string());
  TAXON_CHECK(!fs::is_directory(status), "io.cannot-read", what, " ", path.string(), " is a directory, not a file");
}

// `path` must be an existing directory.
inline void require_directory(const fs::path& path, std::string_view what = "directory") {
  std::error_code ec;
  const auto status = fs::status(path, ec);
  TAXON_CHECK(fs::exists(status), "io.missing-file", what, " not found: ", path.string());
  TAXON_CHECK(fs::is_directory(status), "io.cannot-read", what, " ", path.string(), " is not a directory");
}

inline fs::path temporary_sibling(const fs::path& target) {
  std::random_device rd;
  return target.parent_path() /
         (target.filename().string() + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(rd()));
}

inline void fsync_path(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// Calls write(stream) on a temporary file, then atomically replaces `target`. On any exception the
// temporary is removed and `target` is untouched.
inline void write_atomically(const fs::path& target, const std::function<void(std::ostream&)>& write) {
  if (target.has_parent_path()) ensure_directory(target.parent_path());
  const fs::path tmp = temporary_sibling(target);
  try {
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      TAXON_CHECK(out.good(), "io.cannot-write", "cannot open ", tmp.string(), " for writing: ",
                  std::strerror(errno));
      write(out);
      out.flush();
      TAXON_CHECK(out.good(), "io.cannot-write", "write to ", tmp.string(), " failed (disk full?)");
    }
    fsync_path(tmp);
    std::error_code ec;
    fs::rename(tmp, target, ec);
    TAXON_CHECK(!ec, "io.cannot-write", "cannot rename ", tmp.string(), " to ", target.string(), ": ", ec.message());
    if (target.has_parent_path()) fsync_path(target.parent_path());
  } catch (...) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw;
  }
}

inline void write_text_atomically(const fs::path& target, std::string_view text) {
  write_atomically(target, [&](std::ostream& out) { out.write(text.data(), static_cast<std::streamsize>(text.size())); });
}

// Copies `source` to `target` through write_atomically (streamed, so large files are not held in memory).
inline void copy_file_atomically(const fs::path& source, const fs::path& target) {
  require_file(source);
  std::ifstream in(source, std::ios::binary);
  TAXON_CHECK(in.good(), "io.cannot-read", "cannot open ", source.string(), ": ", std::strerror(errno));
  write_atomically(target, [&](std::ostream& out) {
    std::vector<char> buffer(std::size_t{1} << 20);
    while (in.read(buffer.data(), static_cast<std::streamsize>(buffer.size())) || in.gcount() > 0)
      out.write(buffer.data(), in.gcount());
    TAXON_CHECK(!in.bad(), "io.cannot-read", "read of ", source.string(), " failed");
  });
}

// Fills a new directory root/name through a hidden temporary sibling that is renamed into place only when `fill`
// returns, replacing an earlier root/name. On any exception the temporary is removed and root/name is unchanged.
inline fs::path write_directory_atomically(const fs::path& root, const std::string& name,
                                           const std::function<void(const fs::path& dir)>& fill) {
  ensure_directory(root);
  std::random_device rd;
  const fs::path tmp = root / ("." + name + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(rd()));
  const fs::path target = root / name;
  try {
    ensure_directory(tmp);
    fill(tmp);
    fsync_path(tmp);
    std::error_code ec;
    fs::remove_all(target, ec);  // re-saving the same name replaces it
    TAXON_CHECK(!ec, "io.cannot-write", "cannot replace ", target.string(), ": ", ec.message());
    fs::rename(tmp, target, ec);
    TAXON_CHECK(!ec, "io.cannot-write", "cannot rename ", tmp.string(), " to ", target.string(), ": ", ec.message());
    fsync_path(root);
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    throw;
  }
  return target;
}

// Appends `text` to `file` (created if absent) with a single O_APPEND write, so lines written this way by
// concurrent writers never interleave or tear.
inline void append_text(const fs::path& file, std::string_view text) {
  if (file.has_parent_path()) ensure_directory(file.parent_path());
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  TAXON_CHECK(fd >= 0, "io.cannot-write", "cannot open ", file.string(), " for appending: ", std::strerror(errno));
  const ssize_t n = ::write(fd, text.data(), text.size());
  const int err = errno;
  ::close(fd);
  TAXON_CHECK(n == static_cast<ssize_t>(text.size()), "io.cannot-write", "short write to ", file.string(), ": ",
              n < 0 ? std::strerror(err) : "disk full?");
}

// Reads a whole file into `out`, reusing its capacity (loaders read one file per sample into a per-thread buffer).
inline void read_file_into(const fs::path& path, std::string& out) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    TAXON_CHECK(err != ENOENT && err != ENOTDIR, "io.missing-file", "file not found: ", path.string());
    TAXON_FAIL("io.cannot-read", "cannot open ", path.string(), ": ", std::strerror(err));
  }
  struct Close {
    int fd;
    ~Close() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  TAXON_CHECK(::fstat(fd, &st) == 0, "io.cannot-read", "cannot stat ", path.string(), ": ", std::strerror(errno));
  TAXON_CHECK(!S_ISDIR(st.st_mode), "io.cannot-read", "cannot read ", path.string(), ": is a directory");
  out.resize(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = ::read(fd, out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    TAXON_CHECK(n >= 0, "io.cannot-read", "read of ", path.string(), " failed: ", std::strerror(errno));
    TAXON_CHECK(n > 0, "io.cannot-read", "read of ", path.string(), " failed: file shrank from ", out.size(), " to ", got,
                " bytes while reading");
    got += static_cast<size_t>(n);
  }
}

inline std::string read_file(const fs::path& path) {
  std::string data;
  read_file_into(path, data);
  return data;
}

}  // namespace taxon::io
