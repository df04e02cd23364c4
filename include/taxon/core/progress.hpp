#pragma once
// Progress reporting for long loops: done/total, rate and ETA. On a terminal the line is redrawn in place; when
// stdout is not a terminal (logs, CI, nohup) a log line is written every ~10 s (or every N %), so a long stage
// is visible in a log while it runs, and a final summary line goes to the log either way.
#include "taxon/core/error.hpp"
#include "taxon/core/log.hpp"
#include "taxon/core/options.hpp"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>

namespace taxon {

struct ProgressSnapshot {
  std::int64_t done = 0;
  std::int64_t total = 0;  // 0 = unknown
  double elapsed_s = 0;
  double rate() const { return elapsed_s > 0 ? static_cast<double>(done) / elapsed_s : 0.0; }
  // Seconds left at the current rate; negative when unknown.
  double eta_s() const {
    const double r = rate();
    return (total > 0 && r > 0) ? static_cast<double>(total - done) / r : -1.0;
  }
};

inline std::string format_duration(double seconds) {
  if (seconds < 0) return "?";
  auto s = static_cast<long long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, (s / 60) % 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%lld:%02lld", s / 60, s % 60);
  return buf;
}

inline std::string format_progress(const std::string& label, const ProgressSnapshot& p, const std::string& unit,
                                   const std::string& extra) {
  char buf[160];
  if (p.total > 0) {
    std::snprintf(buf, sizeof buf, "%s %lld/%lld (%.0f%%) %.1f %s/s elapsed %s eta %s", label.c_str(),
                  static_cast<long long>(p.done), static_cast<long long>(p.total),
                  100.0 * static_cast<double>(p.done) / static_cast<double>(p.total), p.rate(), unit.c_str(),
                  format_duration(p.elapsed_s).c_str(), format_duration(p.eta_s()).c_str());
  } else {
    std::snprintf(buf, sizeof buf, "%s %lld %.1f %s/s elapsed %s", label.c_str(), static_cast<long long>(p.done),
                  p.rate(), unit.c_str(), format_duration(p.elapsed_s).c_str());
  }
  std::string line = buf;
  if (!extra.empty()) line += " " + extra;
  return line;
}

struct ProgressOptions {
  using Clock = std::chrono::steady_clock;
  // Not a terminal: a log line at least this many seconds after the previous one (0 = never by time).
  TAXON_ARG(double, every_seconds) = 10.0;
  // Not a terminal: a log line each time another this many percent of the total are done (0 = never by share).
  TAXON_ARG(double, every_percent) = 0.0;
  // Redraw one line in place (a terminal) instead of writing log lines; default: whether stdout is a terminal.
  TAXON_ARG(std::optional<bool>, interactive);
  // Where time comes from (tests inject their own); default: steady_clock::now.
  TAXON_ARG(std::function<Clock::time_point()>, clock);
};

// "10s", "2.5s", "10" (seconds) or "5%": how often progress is logged when stdout is not a terminal, as
// TAXON_PROGRESS_EVERY and the programs' --progress-every take it. `base` keeps the other fields.
inline ProgressOptions parse_progress_every(const std::string& text, ProgressOptions base = {}) {
  std::string body = text;
  const bool percent = !body.empty() && body.back() == '%';
  if (!body.empty() && (body.back() == '%' || body.back() == 's')) body.pop_back();
  char* end = nullptr;
  const double v = body.empty() ? std::nan("") : std::strtod(body.c_str(), &end);
  TAXON_CHECK(end && *end == '\0' && std::isfinite(v) && v > 0 && (!percent || v <= 100), "core.bad-option",
              "progress interval '", text, "' must be seconds (\"10s\", \"30\") or a share (\"5%\"), above 0");
  if (percent) return base.every_seconds(0.0).every_percent(v);
  return base.every_seconds(v).every_percent(0.0);
}

// What a Progress built without explicit options uses: every 10 s, or TAXON_PROGRESS_EVERY, or what a program set
// with set_progress_defaults() (like log::set_level, one process-wide setting).
inline ProgressOptions& progress_defaults() {
  static ProgressOptions defaults = [] {
    const char* env = std::getenv("TAXON_PROGRESS_EVERY");
    if (!env || !*env) return ProgressOptions{};
    try {
      return parse_progress_every(env);
    } catch (const Error& e) {
      log::warn("TAXON_PROGRESS_EVERY ignored: ", e.what());
      return ProgressOptions{};
    }
  }();
  return defaults;
}
inline void set_progress_defaults(ProgressOptions options) { progress_defaults() = std::move(options); }

class Progress {
 public:
  using Clock = ProgressOptions::Clock;

  Progress(std::string label, std::int64_t total, std::string unit = "it")
      : Progress(std::move(label), total, std::move(unit), progress_defaults()) {}
  Progress(std::string label, std::int64_t total, std::string unit, ProgressOptions options)
      : label_(std::move(label)), unit_(std::move(unit)), options_(std::move(options)),
        interactive_(options_.interactive().value_or(::isatty(STDOUT_FILENO) == 1)) {
    if (!options_.clock()) options_.clock([] { return Clock::now(); });
    start_ = last_draw_ = last_log_ = options_.clock()();
    snapshot_.total = total;
  }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  ~Progress() { finish(); }

  // Advance by n units; `extra` (e.g. "loss 1.23") is shown after the rate.
  void advance(std::int64_t n = 1, const std::string& extra = {}) {
    snapshot_.done += n;
    extra_ = extra;
    const auto now = options_.clock()();
    snapshot_.elapsed_s = std::chrono::duration<double>(now - start_).count();
    if (interactive_) {
      if (now - last_draw_ > std::chrono::milliseconds(200)) {
        last_draw_ = now;
        std::printf("\r\033[K%s", format_progress(label_, snapshot_, unit_, extra_).c_str());
        std::fflush(stdout);
      }
      return;
    }
    if (due(now)) {
      last_log_ = now;
      logged_percent_ = percent_done();
      ++lines_;
      log::info(format_progress(label_, snapshot_, unit_, extra_));
    }
  }

  void finish() {
    if (finished_) return;
    finished_ = true;
    snapshot_.elapsed_s = std::chrono::duration<double>(options_.clock()() - start_).count();
    if (interactive_) std::printf("\r\033[K");
    ++lines_;
    log::info(format_progress(label_, snapshot_, unit_, extra_));
  }

  const ProgressSnapshot& snapshot() const { return snapshot_; }
  // Log lines written so far (intermediate ones and the final one).
  int64_t lines_logged() const { return lines_; }
  void set_interactive(bool on) { interactive_ = on; }

 private:
  double percent_done() const {
    return snapshot_.total > 0 ? 100.0 * static_cast<double>(snapshot_.done) / static_cast<double>(snapshot_.total) : 0.0;
  }
  // An intermediate line is due when the interval has passed, or the next share of the total is done; never for
  // the last unit (finish() writes that line).
  bool due(Clock::time_point now) const {
    if (snapshot_.total > 0 && snapshot_.done >= snapshot_.total) return false;
    if (options_.every_seconds() > 0 &&
        std::chrono::duration<double>(now - last_log_).count() >= options_.every_seconds())
      return true;
    return options_.every_percent() > 0 && snapshot_.total > 0 &&
           std::floor(percent_done() / options_.every_percent()) > std::floor(logged_percent_ / options_.every_percent());
  }

  std::string label_, unit_, extra_;
  ProgressOptions options_;
  ProgressSnapshot snapshot_;
  Clock::time_point start_, last_draw_, last_log_;
  double logged_percent_ = 0;
  int64_t lines_ = 0;
  bool interactive_;
  bool finished_ = false;
};

}  // namespace taxon
