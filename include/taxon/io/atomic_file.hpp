#pragma once
// Every output goes through a temporary file in the destination directory that is fsync'ed and then
// renamed into place, so a crash or kill mid-write never leaves a truncated result or clobbers the old one.
// Also the filesystem boundary of taxon: the helpers here report failures as taxon::Error (io.*), never as
// std::filesystem::filesystem_error.
#include "taxon/core/error.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <random>
#include <streambuf>
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

// Removes `path` (a file, or a directory with everything in it) if it exists; returns whether it did.
inline bool remove_path(const fs::path& path) {
  std::error_code ec;
  const auto removed = fs::remove_all(path, ec);
  TAXON_CHECK(!ec, "io.cannot-write", "cannot remove ", path.string(), ": ", ec.message());
  return removed > 0;
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

// ---- simulated full disk (a test seam) ------------------------------------------------------------------------
// Bytes the writers below may still write before they fail as a full disk does (ENOSPC); negative: no limit. Starts
// from the environment variable TAXON_IO_FAIL_AFTER_BYTES (scripts/fault-inject, the full-disk tests); tests in
// the same process set it with simulate_disk_full_after(). Process-wide on purpose: a disk is shared by all threads.
inline std::atomic<std::int64_t>& simulated_disk_space() {
  static std::atomic<std::int64_t> bytes{[] {
    const char* env = std::getenv("TAXON_IO_FAIL_AFTER_BYTES");
    if (env == nullptr || *env == '\0') return std::int64_t{-1};
    char* end = nullptr;
    const long long n = std::strtoll(env, &end, 10);
    return end != nullptr && *end == '\0' && n >= 0 ? static_cast<std::int64_t>(n) : std::int64_t{-1};
  }()};
  return bytes;
}
// nullopt: writes are limited only by the real disk again.
inline void simulate_disk_full_after(std::optional<std::uint64_t> bytes) {
  simulated_disk_space().store(bytes ? static_cast<std::int64_t>(*bytes) : -1);
}
// How many of `n` bytes the simulated disk still takes (all of them when no limit is set).
inline std::size_t take_simulated_disk_space(std::size_t n) {
  auto& space = simulated_disk_space();
  std::int64_t left = space.load();
  while (left >= 0) {
    const auto granted = std::min<std::int64_t>(left, static_cast<std::int64_t>(n));
    if (space.compare_exchange_weak(left, left - granted)) return static_cast<std::size_t>(granted);
  }
  return n;
}

// Writes all of [data, data+n) to `fd`; false with errno set on failure (ENOSPC also when the simulated disk is full).
inline bool write_all(int fd, const char* data, std::size_t n) {
  const std::size_t allowed = take_simulated_disk_space(n);
  std::size_t done = 0;
  while (done < allowed) {
    const ssize_t w = ::write(fd, data + done, allowed - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    done += static_cast<std::size_t>(w);
  }
  if (allowed < n) {
    errno = ENOSPC;
    return false;
  }
  return true;
}

inline bool is_disk_full(int err) { return err == ENOSPC || err == EDQUOT; }

// A write buffer over a file descriptor that remembers the first failure's errno (the stream then reports bad()).
class FileWriteBuffer : public std::streambuf {
 public:
  explicit FileWriteBuffer(int fd) : fd_(fd), buffer_(std::size_t{1} << 16) {
    setp(buffer_.data(), buffer_.data() + buffer_.size());
  }
  int error() const { return error_; }

 protected:
  int_type overflow(int_type ch) override {
    if (!drain()) return traits_type::eof();
    if (!traits_type::eq_int_type(ch, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(ch);
      pbump(1);
    }
    return traits_type::not_eof(ch);
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    if (n >= static_cast<std::streamsize>(buffer_.size())) {  // large blocks go straight through
      if (!drain()) return 0;
      if (!write_all(fd_, s, static_cast<std::size_t>(n))) return fail();
      return n;
    }
    return std::streambuf::xsputn(s, n);
  }
  int sync() override { return drain() ? 0 : -1; }

 private:
  bool drain() {
    if (error_ != 0) return false;
    const auto n = static_cast<std::size_t>(pptr() - pbase());
    if (n > 0 && !write_all(fd_, pbase(), n)) {
      fail();
      return false;
    }
    setp(buffer_.data(), buffer_.data() + buffer_.size());
    return true;
  }
  std::streamsize fail() {
    error_ = errno != 0 ? errno : EIO;
    return 0;
  }
  int fd_;
  std::vector<char> buffer_;
  int error_ = 0;
};

// The error for a failed write of `file` (errno `err`): io.disk-full when the disk (or quota) is full.
[[noreturn]] inline void fail_write(const fs::path& file, int err, std::string_view doing) {
  TAXON_CHECK(!is_disk_full(err), "io.disk-full", "the disk is full: ", doing, " ", file.string(), " failed (",
              std::strerror(err), "); the previous version of the file is untouched. Free some space and resume.");
  TAXON_FAIL("io.cannot-write", doing, " ", file.string(), " failed: ", std::strerror(err));
}

// Calls write(stream) on a temporary file, then atomically replaces `target` (after fsync'ing the file and, once
// renamed, its directory). On any failure the temporary is removed and `target` is untouched; a full disk is
// io.disk-full, also when it makes `write` itself throw (e.g. LibTorch's archive writer).
inline void write_atomically(const fs::path& target, const std::function<void(std::ostream&)>& write) {
  if (target.has_parent_path()) ensure_directory(target.parent_path());
  const fs::path tmp = temporary_sibling(target);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail_write(tmp, errno, "creating");
  bool closed = false;
  FileWriteBuffer buffer(fd);
  try {
    {
      std::ostream out(&buffer);
      write(out);
      out.flush();
      if (!out.good()) fail_write(tmp, buffer.error() != 0 ? buffer.error() : EIO, "writing");
    }
    if (::fsync(fd) != 0) fail_write(tmp, errno, "fsync of");
    closed = true;
    if (::close(fd) != 0) fail_write(tmp, errno, "closing");
    std::error_code ec;
    fs::rename(tmp, target, ec);
    TAXON_CHECK(!ec, "io.cannot-write", "cannot rename ", tmp.string(), " to ", target.string(), ": ", ec.message());
    if (target.has_parent_path()) fsync_path(target.parent_path());
  } catch (const Error&) {
    if (!closed) ::close(fd);
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw;
  } catch (...) {
    if (!closed) ::close(fd);
    std::error_code ignored;
    fs::remove(tmp, ignored);
    if (buffer.error() != 0) fail_write(tmp, buffer.error(), "writing");  // the writer threw because the disk failed
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

// Removes the temporaries that write_atomically ("<name>.tmp.<pid>.<random>") and write_directory_atomically
// (".<name>.tmp.<pid>.<random>") left in `dir` when a process died mid-write; those of a process still running
// (this one included) are left alone. Returns how many went.
inline int remove_stale_temporaries(const fs::path& dir) {
  int removed = 0;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const auto mark = name.rfind(".tmp.");
    if (mark == std::string::npos || mark == 0) continue;
    const char* pid_text = name.c_str() + mark + 5;
    char* pid_end = nullptr;
    const long pid = std::strtol(pid_text, &pid_end, 10);
    if (pid <= 0 || pid_end == pid_text || *pid_end != '.' ||
        name.find_first_not_of("0123456789", static_cast<size_t>(pid_end - name.c_str()) + 1) != std::string::npos)
      continue;  // not one of ours
    if (pid == ::getpid() || ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // still running
    std::error_code ignored;
    removed += fs::remove_all(it->path(), ignored) > 0 ? 1 : 0;
  }
  return removed;
}

// Appends `text` to `file` (created if absent) with a single O_APPEND write, so lines written this way by
// concurrent writers never interleave. A failed or short write (a full disk) is cut off again, so the file never
// ends in a torn line, and raises io.disk-full / io.cannot-write.
inline void append_text(const fs::path& file, std::string_view text) {
  if (file.has_parent_path()) ensure_directory(file.parent_path());
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) fail_write(file, errno, "opening for appending");
  struct stat st {};
  const bool sized = ::fstat(fd, &st) == 0;
  const bool written = write_all(fd, text.data(), text.size());
  const int err = errno;
  if (!written && sized) (void)::ftruncate(fd, st.st_size);  // drop the part of the line that got through
  ::close(fd);
  if (!written) fail_write(file, err != 0 ? err : EIO, "appending to");
}

// CRC-32 (zlib's, as Python's zlib.crc32) of a whole file, read in blocks.
inline std::uint32_t file_crc32(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    TAXON_CHECK(err != ENOENT && err != ENOTDIR, "io.missing-file", "file not found: ", path.string());
    TAXON_FAIL("io.cannot-read", "cannot open ", path.string(), ": ", std::strerror(err));
  }
  std::vector<unsigned char> block(std::size_t{1} << 20);
  uLong crc = crc32(0L, Z_NULL, 0);
  for (;;) {
    const ssize_t n = ::read(fd, block.data(), block.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      TAXON_FAIL("io.cannot-read", "read of ", path.string(), " failed: ", std::strerror(err));
    }
    if (n == 0) break;
    crc = crc32(crc, block.data(), static_cast<uInt>(n));
  }
  ::close(fd);
  return static_cast<std::uint32_t>(crc);
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
