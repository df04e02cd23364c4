#pragma once
// Progress reporting for long loops: rate and ETA, redrawn in place on a terminal and silent otherwise
// (CI logs and redirected output stay clean; a final summary line still goes to the log).
#include "taxon/core/log.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
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

class Progress {
 public:
  using Clock = std::chrono::steady_clock;

  Progress(std::string label, std::int64_t total, std::string unit = "it")
      : label_(std::move(label)), unit_(std::move(unit)), start_(Clock::now()), last_draw_(start_),
        interactive_(::isatty(STDOUT_FILENO) == 1) {
    snapshot_.total = total;
  }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  ~Progress() { finish(); }

  // Advance by n units; `extra` (e.g. "loss 1.23") is shown after the rate.
  void advance(std::int64_t n = 1, const std::string& extra = {}) {
    snapshot_.done += n;
    extra_ = extra;
    const auto now = Clock::now();
    snapshot_.elapsed_s = std::chrono::duration<double>(now - start_).count();
    if (interactive_ && now - last_draw_ > std::chrono::milliseconds(200)) {
      last_draw_ = now;
      std::printf("\r\033[K%s", format_progress(label_, snapshot_, unit_, extra_).c_str());
      std::fflush(stdout);
    }
  }

  void finish() {
    if (finished_) return;
    finished_ = true;
    snapshot_.elapsed_s = std::chrono::duration<double>(Clock::now() - start_).count();
    if (interactive_) std::printf("\r\033[K");
    log::info(format_progress(label_, snapshot_, unit_, extra_));
  }

  const ProgressSnapshot& snapshot() const { return snapshot_; }
  void set_interactive(bool on) { interactive_ = on; }

 private:
  std::string label_, unit_, extra_;
  ProgressSnapshot snapshot_;
  Clock::time_point start_, last_draw_;
  bool interactive_;
  bool finished_ = false;
};

}  // namespace taxon
