#pragma once
// One error mechanism: every failure carries a stable id such as "io.missing-file", printed as
// "[taxon.io.missing-file] message" so users (and tests) can match on the id, not on prose.
#include <c10/util/StringUtil.h>

#include <stdexcept>
#include <string>
#include <utility>

namespace taxon {

class Error : public std::runtime_error {
 public:
  Error(std::string id, const std::string& message)
      : std::runtime_error("[taxon." + id + "] " + message), id_(std::move(id)) {}

  // The stable id without the "taxon." prefix, e.g. "loss.label-out-of-range".
  const std::string& id() const noexcept { return id_; }

 private:
  std::string id_;
};

namespace detail {
template <typename... Args>
[[noreturn]] inline void fail(const char* id, const Args&... args) {
  throw Error(id, c10::str(args...));
}
}  // namespace detail

}  // namespace taxon

// TAXON_CHECK(cond, "area.what", parts...) throws taxon::Error("[taxon.area.what] parts...") when cond is false.
// The message parts are only formatted on failure, as with TORCH_CHECK.
#define TAXON_CHECK(cond, id, ...)                          \
  do {                                                      \
    if (!(cond)) [[unlikely]] {                             \
      ::taxon::detail::fail(id, __VA_ARGS__);               \
    }                                                       \
  } while (false)

#define TAXON_FAIL(id, ...) ::taxon::detail::fail(id, __VA_ARGS__)
