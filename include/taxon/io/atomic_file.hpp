#pragma once
// Every output goes through a temporary file in the destination directory that is fsync'ed and then
// renamed into place, so a crash or kill mid-write never leaves a truncated result or clobbers the old one.
#include "taxon/core/error.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <string_view>

namespace taxon::io {

namespace fs = std::filesystem;

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
  if (target.has_parent_path() && !fs::exists(target.parent_path())) {
    std::error_code ec;
    fs::create_directories(target.parent_path(), ec);
    TAXON_CHECK(!ec, "io.cannot-write", "cannot create directory ", target.parent_path().string(), ": ",
                ec.message());
  }
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

// Reads a whole file; a missing or unreadable file is an error that names it.
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
