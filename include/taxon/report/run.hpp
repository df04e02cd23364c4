#pragma once
// Everything the report shows, read from a run directory. Every file is optional (runs made by older versions,
// runs still in progress): what is absent stays empty and the report says "not recorded in this run"; a file that
// exists but cannot be read is listed in `problems` instead of stopping the report.
//
//   config.json                  the run's options (any JSON object)
//   metrics.jsonl                one line per logged training step (train::MetricsLog), with "round" when present
//   round-N/labels.npy           k-means pseudo-labels -> cluster sizes
//   round-N/cluster_quality.json NMI / AMI / purity per known rank (cluster/quality.hpp)
//   round-N/done                 the round finished
//   eval_table.csv               the seeds' table (eval::TaxonomyTable), one block of rows per model
//   retrieval.json               {model: {rank, recall_at_1, recall_at_5, map_at_r, r_precision, ...}}
//   zero_shot.csv                zero-shot top-1/top-5 (text::ZeroShotTable)
//   timings.json                 wall time per stage (report/timings.hpp)
//   skipped_images.json          images left out as unreadable (data/skipped_images.hpp)
#include "taxon/cluster/quality.hpp"
#include "taxon/core/error.hpp"
#include "taxon/data/csv.hpp"
#include "taxon/data/skipped_images.hpp"
#include "taxon/io/atomic_file.hpp"
#include "taxon/io/npy.hpp"
#include "taxon/report/timings.hpp"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace taxon::report {

namespace fs = std::filesystem;

// One logged optimizer step (metrics.jsonl "event": "step"). Absent values are NaN.
struct TrainingStep {
  int round = 0;
  int64_t epoch = 0, step = 0;
  double loss = std::nan(""), lr = std::nan(""), head_lr = std::nan(""), grad_norm = std::nan("");
  double images = std::nan(""), seconds = std::nan("");
  double images_per_second() const { return seconds > 0 ? images / seconds : std::nan(""); }
};

struct RoundRecord {
  int index = 0;
  fs::path dir;
  bool done = false;
  std::vector<int64_t> cluster_sizes;  // images per pseudo-class (empty: no labels.npy)
  std::optional<cluster::ClusterQuality> quality;
};

struct FileEntry {
  std::string path;  // relative to the run directory; directories end in '/'
  uintmax_t bytes = 0;
  int64_t files = 1;  // files inside, for directories
};

struct RunRecord {
  fs::path dir;
  std::string label;  // how comparisons name this run (the directory name unless set)
  nlohmann::json config;  // null when config.json is absent
  std::vector<TrainingStep> steps;
  std::vector<RoundRecord> rounds;
  std::optional<data::CsvTable> eval_table, zero_shot;
  nlohmann::json retrieval;  // null when retrieval.json is absent
  std::optional<StageTimings> timings;
  data::SkippedImages skipped;  // empty: no image was skipped (or the record is unreadable: see problems)
  std::vector<FileEntry> files;
  std::vector<std::string> problems;  // files present but unreadable, with the reason

  bool finished() const {
    if (timings && !timings->status.empty()) return timings->status == "finished";
    return retrieval.is_object() && retrieval.contains("after");  // runs made before timings.json existed
  }
  // A config value, or `fallback` when absent or of another type.
  template <typename T>
  T config_value(const std::string& key, T fallback) const {
    if (!config.is_object() || !config.contains(key)) return fallback;
    try {
      return config.at(key).get<T>();
    } catch (const nlohmann::json::exception&) {
      return fallback;
    }
  }
};

namespace run_detail {

inline double number_or_nan(const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || !j.at(key).is_number()) return std::numeric_limits<double>::quiet_NaN();
  return j.at(key).get<double>();
}

// Steps of metrics.jsonl. Lines without "round" (runs before it was recorded) start a new round whenever the step
// counter goes back, as it does when each round's Trainer starts from step 1.
inline std::vector<TrainingStep> parse_metrics(const std::string& text, const std::string& source,
                                               std::vector<std::string>& problems) {
  std::vector<TrainingStep> steps;
  std::istringstream in(text);
  std::string line;
  int64_t line_no = 0, last_step = -1;
  int inferred_round = 0;
  std::vector<int64_t> bad_lines;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      if (!in.eof()) bad_lines.push_back(line_no);  // a torn last line is a write in progress, not a problem
      continue;
    }
    if (j.value("event", std::string()) != "step") continue;
    TrainingStep s;
    s.epoch = j.value("epoch", int64_t{0});
    s.step = j.value("step", int64_t{0});
    if (j.contains("round") && j.at("round").is_number_integer()) {
      s.round = j.at("round").get<int>();
    } else {
      if (s.step <= last_step) ++inferred_round;
      s.round = inferred_round;
    }
    last_step = s.step;
    s.loss = number_or_nan(j, "loss");
    s.lr = number_or_nan(j, "lr");
    s.head_lr = number_or_nan(j, "head_lr");
    s.grad_norm = number_or_nan(j, "grad_norm");
    s.images = number_or_nan(j, "images");
    s.seconds = number_or_nan(j, "seconds");
    steps.push_back(s);
  }
  if (!bad_lines.empty()) {
    std::string list;
    for (size_t i = 0; i < bad_lines.size() && i < 5; ++i) {
      if (i) list += ", ";
      list += std::to_string(bad_lines[i]);
    }
    problems.push_back(source + ": " + std::to_string(bad_lines.size()) + " line(s) are not JSON and were skipped (line " +
                       list + (bad_lines.size() > 5 ? ", ..." : "") + ")");
  }
  return steps;
}

inline std::vector<int64_t> cluster_sizes(const fs::path& labels_npy) {
  const auto labels = io::load_npy(labels_npy);
  TAXON_CHECK(labels.dim() == 1 && !at::isFloatingType(labels.scalar_type()), "report.bad-run-file", labels_npy.string(),
              " must hold a 1-D integer array, got ", labels.scalar_type(), " ", labels.sizes());
  if (labels.numel() == 0) return {};
  const auto l = labels.to(at::kLong);
  TAXON_CHECK(l.min().item<int64_t>() >= 0, "report.bad-run-file", labels_npy.string(), " has negative pseudo-labels");
  const auto counts = at::bincount(l).contiguous();
  return std::vector<int64_t>(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + counts.numel());
}

// Top-level entries and each round's entries; deeper folders (checkpoints) as one line with their total size.
inline std::vector<FileEntry> list_files(const fs::path& dir) {
  std::vector<FileEntry> out;
  const auto add_level = [&](const fs::path& d, const std::string& prefix, bool descend_rounds, auto& self) -> void {
    std::vector<fs::directory_entry> entries;
    std::error_code ec;
    for (fs::directory_iterator it(d, ec), end; !ec && it != end; it.increment(ec)) entries.push_back(*it);
    std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.path().filename() < b.path().filename(); });
    for (const auto& e : entries) {
      const std::string name = e.path().filename().string();
      if (name.find(".tmp.") != std::string::npos) continue;  // an atomic write in progress
      if (e.is_directory(ec)) {
        if (descend_rounds && name.rfind("round-", 0) == 0) {
          out.push_back({prefix + name + "/", 0, 0});
          self(e.path(), prefix + name + "/", false, self);
          continue;
        }
        FileEntry f{prefix + name + "/", 0, 0};
        for (fs::recursive_directory_iterator it(e.path(), ec), end; !ec && it != end; it.increment(ec))
          if (it->is_regular_file(ec)) f.bytes += it->file_size(ec), ++f.files;
        out.push_back(f);
      } else if (e.is_regular_file(ec)) {
        out.push_back({prefix + name, e.file_size(ec), 1});
      }
    }
  };
  add_level(dir, "", true, add_level);
  return out;
}

}  // namespace run_detail

// Reads what exists of a run directory; only a missing directory is an error.
inline RunRecord read_run(const fs::path& dir) {
  std::error_code ec;  // no std::filesystem exception escapes: unreadable entries are skipped or listed as problems
  TAXON_CHECK(fs::is_directory(dir, ec), "report.missing-run-dir", "run directory not found: ", dir.string());
  RunRecord r;
  r.dir = dir;
  r.label = fs::weakly_canonical(dir, ec).filename().string();
  if (r.label.empty()) r.label = dir.filename().string();
  const auto attempt = [&](const fs::path& path, auto&& read) {
    try {
      if (!io::path_exists(path)) return;
      read();
    } catch (const std::exception& e) {
      r.problems.push_back(path.lexically_relative(dir).string() + ": " + e.what());
    }
  };
  const auto json_file = [&](const fs::path& path) {
    auto j = nlohmann::json::parse(io::read_file(path), nullptr, false);
    TAXON_CHECK(!j.is_discarded(), "report.bad-run-file", path.string(), " is not valid JSON");
    return j;
  };

  attempt(dir / "config.json", [&] {
    r.config = json_file(dir / "config.json");
    TAXON_CHECK(r.config.is_object(), "report.bad-run-file", (dir / "config.json").string(), " is not a JSON object");
  });
  if (!r.config.is_object()) r.config = nullptr;
  attempt(dir / "metrics.jsonl", [&] {
    r.steps = run_detail::parse_metrics(io::read_file(dir / "metrics.jsonl"), "metrics.jsonl", r.problems);
  });
  attempt(dir / "eval_table.csv", [&] { r.eval_table = data::CsvTable::read(dir / "eval_table.csv"); });
  attempt(dir / "zero_shot.csv", [&] { r.zero_shot = data::CsvTable::read(dir / "zero_shot.csv"); });
  attempt(dir / "retrieval.json", [&] {
    r.retrieval = json_file(dir / "retrieval.json");
    TAXON_CHECK(r.retrieval.is_object(), "report.bad-run-file", (dir / "retrieval.json").string(), " is not a JSON object");
  });
  if (!r.retrieval.is_object()) r.retrieval = nullptr;
  attempt(dir / StageTimings::kFileName, [&] { r.timings = StageTimings::load(dir); });
  attempt(dir / data::SkippedImages::kFileName, [&] { r.skipped = data::SkippedImages::load(dir); });

  std::vector<int> indices;
  std::vector<std::string> subdirectories;
  try {
    subdirectories = io::subdirectory_names(dir);
  } catch (const std::exception& e) {
    r.problems.push_back(std::string("round-N/: ") + e.what());
  }
  for (const auto& name : subdirectories) {
    if (name.rfind("round-", 0) != 0) continue;
    const std::string digits = name.substr(6);
    if (digits.empty() || digits.size() > 6 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) continue;
    indices.push_back(std::stoi(digits));
  }
  std::sort(indices.begin(), indices.end());
  for (int i : indices) {
    RoundRecord round;
    round.index = i;
    round.dir = dir / ("round-" + std::to_string(i));
    round.done = fs::exists(round.dir / "done", ec);
    attempt(round.dir / "labels.npy", [&] { round.cluster_sizes = run_detail::cluster_sizes(round.dir / "labels.npy"); });
    attempt(round.dir / cluster::ClusterQuality::kFileName, [&] { round.quality = cluster::load_cluster_quality(round.dir); });
    r.rounds.push_back(std::move(round));
  }
  r.files = run_detail::list_files(dir);
  return r;
}

}  // namespace taxon::report
