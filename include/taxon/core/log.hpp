#pragma once
// A small leveled logger writing "[taxon] message" lines to stderr; TAXON_LOG_LEVEL=debug|info|warn|error|off.
#include <c10/util/StringUtil.h>

#include <cstdlib>
#include <iostream>
#include <mutex>
#include <string_view>

namespace taxon::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3, off = 4 };

inline Level level_from_env() {
  const char* env = std::getenv("TAXON_LOG_LEVEL");
  if (!env) return Level::info;
  std::string_view v(env);
  if (v == "debug") return Level::debug;
  if (v == "warn") return Level::warn;
  if (v == "error") return Level::error;
  if (v == "off") return Level::off;
  return Level::info;
}

inline Level& threshold() {
  static Level level = level_from_env();
  return level;
}
inline void set_level(Level level) { threshold() = level; }

inline std::ostream*& sink() {
  static std::ostream* out = &std::cerr;
  return out;
}
// Redirect all log lines (tests capture them in a stringstream).
inline void set_sink(std::ostream& out) { sink() = &out; }

template <typename... Args>
void write(Level level, const Args&... args) {
  if (level < threshold()) return;
  static std::mutex mutex;
  static constexpr const char* tags[] = {"debug", "info", "warn", "error"};
  std::string line = c10::str("[taxon ", tags[static_cast<int>(level)], "] ", args..., '\n');
  std::lock_guard<std::mutex> lock(mutex);
  *sink() << line << std::flush;
}

template <typename... Args> void debug(const Args&... args) { write(Level::debug, args...); }
template <typename... Args> void info(const Args&... args) { write(Level::info, args...); }
template <typename... Args> void warn(const Args&... args) { write(Level::warn, args...); }
template <typename... Args> void error(const Args&... args) { write(Level::error, args...); }

}  // namespace taxon::log
