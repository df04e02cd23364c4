#pragma once
// Wall time per stage of a run (load data, baseline evaluation, round N clustering/training, final evaluation),
// kept in <run dir>/timings.json. This header owns that file's format. A resumed run appends to the same file
// with the next session number, so a stage interrupted and continued shows both parts.
#include "taxon/io/json.hpp"
#include "taxon/core/error.hpp"
#include "taxon/io/atomic_file.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <string>
#include <vector>

namespace taxon::report {

struct StageTiming {
  std::string stage;
  double seconds = 0;
  int session = 0;          // 0 for the first invocation, +1 for each --resume
  std::string finished_at;  // UTC, ISO 8601
};

struct StageTimings {
  std::vector<StageTiming> stages;
  std::string status;  // "running", "finished", "interrupted"

  static constexpr const char* kFileName = "timings.json";

  int last_session() const {
    int s = -1;
    for (const auto& t : stages) s = std::max(s, t.session);
    return s;
  }
  double total_seconds() const {
    double total = 0;
    for (const auto& t : stages) total += t.seconds;
    return total;
  }

  nlohmann::json to_json() const {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& t : stages)
      list.push_back({{"stage", t.stage}, {"seconds", t.seconds}, {"session", t.session}, {"finished_at", t.finished_at}});
    return {{"status", status}, {"stages", list}};
  }

  static StageTimings from_json(const nlohmann::json& j, const std::string& source) {
    TAXON_CHECK(j.is_object() && j.contains("stages") && j.at("stages").is_array(), "report.bad-timings", source,
                ": expected an object with a 'stages' array");
    StageTimings t;
    t.status = j.value("status", std::string());
    for (const auto& s : j.at("stages")) {
      TAXON_CHECK(s.is_object() && s.contains("stage") && s.at("stage").is_string() && s.contains("seconds") &&
                      s.at("seconds").is_number(),
                  "report.bad-timings", source, ": every stage needs a 'stage' name and 'seconds'");
      t.stages.push_back({s.at("stage").get<std::string>(), s.at("seconds").get<double>(), s.value("session", 0),
                          s.value("finished_at", std::string())});
    }
    return t;
  }

  void save(const std::filesystem::path& run_dir) const {
    io::write_text_atomically(run_dir / kFileName, io::dump_json(to_json(), 2) + "\n");
  }
  static StageTimings load(const std::filesystem::path& run_dir) {
    const auto path = run_dir / kFileName;
    const auto j = nlohmann::json::parse(io::read_file(path), nullptr, false);
    TAXON_CHECK(!j.is_discarded(), "report.bad-timings", path.string(), " is not valid JSON");
    return from_json(j, path.string());
  }
};

// Now, UTC, as "2024-05-01T12:34:56Z".
inline std::string utc_timestamp() {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  ::gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace taxon::report
