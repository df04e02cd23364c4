#pragma once
// The run report: <run dir>/report.html, one self-contained file (inline CSS and SVG, no script, nothing fetched)
// that a biologist opens from disk. write_run_report() rebuilds it from whatever the run directory holds, so it
// works during a run, at its end, and for runs made before reports existed (`taxon-report RUN_DIR`).
// RunRecorder is what a training program calls at stage boundaries: it times the stages (timings.json) and
// rewrites the report each time; ReportEachEpoch does the same after every training epoch.
#include "taxon/core/log.hpp"
#include "taxon/core/options.hpp"
#include "taxon/io/atomic_file.hpp"
#include "taxon/report/chart.hpp"
#include "taxon/report/html.hpp"
#include "taxon/report/run.hpp"
#include "taxon/report/sections.hpp"
#include "taxon/report/sweep.hpp"
#include "taxon/report/timings.hpp"
#include "taxon/train/callbacks.hpp"

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace taxon::report {

struct ReportOptions {
  TAXON_ARG(std::filesystem::path, output) = {};  // default: <run dir>/report.html
  TAXON_ARG(std::string, title) = {};             // default: "taxon run: <dir name>"
  TAXON_ARG(size_t, max_points) = 600;            // per training curve; longer ones are bucket-averaged
};

inline std::filesystem::path report_path(const std::filesystem::path& run_dir, const ReportOptions& o = {}) {
  return o.output().empty() ? run_dir / "report.html" : o.output();
}

// Every section of one run, in reading order.
inline Page run_report_page(const RunRecord& run, const ReportOptions& o = {}) {
  const auto out = report_path(run.dir, o);
  std::string status = run.finished() ? "finished" : run.timings && !run.timings->status.empty() ? run.timings->status : "incomplete";
  std::string subtitle = "<code>" + escape(std::filesystem::absolute(run.dir).lexically_normal().string()) + "</code>";
  if (run.timings && !run.timings->stages.empty() && status != "finished")
    subtitle += " \u00b7 last finished stage: " + escape(run.timings->stages.back().stage);
  Page page(o.title().empty() ? "taxon run: " + run.label : o.title(), subtitle, status);
  page.add(summary_section(run))
      .add(evaluation_section(run))
      .add(retrieval_section(run))
      .add(training_section(run, o.max_points()))
      .add(clusters_section(run))
      .add(skipped_section(run))
      .add(zero_shot_section(run))
      .add(timing_section(run))
      .add(config_section(run))
      .add(files_section(run, out.has_parent_path() ? out.parent_path() : std::filesystem::path(".")));
  if (!run.problems.empty()) page.add(problems_section(run));
  return page;
}

// Reads the run directory and writes its report atomically; returns the report's path.
inline std::filesystem::path write_run_report(const std::filesystem::path& run_dir, const ReportOptions& o = {}) {
  const auto run = read_run(run_dir);
  const auto out = report_path(run_dir, o);
  io::write_text_atomically(out, run_report_page(run, o).html());
  return out;
}

// One page comparing runs (e.g. a sweep over cluster ratios from the same start): the comparison first, then a
// link to each run's own report.
inline std::filesystem::path write_comparison_report(const std::vector<std::filesystem::path>& run_dirs,
                                                     const std::filesystem::path& output, const std::string& title,
                                                     const std::string& model = "after") {
  std::vector<RunRecord> runs;
  for (const auto& d : run_dirs) runs.push_back(read_run(d));
  Page page(title, "<code>" + escape(output.parent_path().string()) + "</code>");
  page.add({"comparison", "Comparison", comparison_html(compare_runs(runs, model)), !runs.empty()});
  std::string links = "<ul>";
  std::error_code ec;
  for (const auto& r : runs) {
    auto href = std::filesystem::relative(r.dir / "report.html", output.parent_path(), ec).generic_string();
    if (ec || href.empty()) href = std::filesystem::absolute(r.dir / "report.html").generic_string();
    links += "<li><a href=\"" + escape(href) + "\">" + escape(r.label) + "</a></li>";
  }
  page.add({"runs", "Run reports", links + "</ul>", true});
  io::write_text_atomically(output, page.html());
  return output;
}

// Times a run's stages and keeps its report current. Construct once the run directory exists; call begin() at
// each stage boundary and end() when the run stops. A failing report write is logged, never thrown: a report must
// not be the reason a training run dies. `writes` false (the ranks other than 0 of a distributed run) keeps the
// same calls but writes nothing: one process owns a run directory's timings and report.
class RunRecorder {
 public:
  explicit RunRecorder(std::filesystem::path run_dir, std::string first_stage, ReportOptions options = {},
                       bool writes = true)
      : dir_(std::move(run_dir)), options_(std::move(options)), stage_(std::move(first_stage)), start_(Clock::now()),
        writes_(writes) {
    if (!writes_) return;
    try {
      if (io::path_exists(dir_ / StageTimings::kFileName)) timings_ = StageTimings::load(dir_);
    } catch (const std::exception& e) {
      log::warn("report: starting a new ", StageTimings::kFileName, ": ", e.what());
    }
    session_ = timings_.last_session() + 1;
    timings_.status = "running";
    save();
  }

  // Closes the current stage (recording its wall time) and starts `next`.
  void begin(std::string next) {
    close_stage();
    stage_ = std::move(next);
    save();
    refresh();
  }
  // Closes the current stage; status is "finished" or "interrupted".
  void end(const std::string& status) {
    close_stage();
    stage_.clear();
    timings_.status = status;
    save();
    refresh();
  }
  // Rewrites report.html from the run directory.
  void refresh() {
    if (!writes_) return;
    try {
      write_run_report(dir_, options_);
    } catch (const std::exception& e) {
      log::warn("report: could not write ", report_path(dir_, options_).string(), ": ", e.what());
    }
  }
  std::filesystem::path report_file() const { return report_path(dir_, options_); }
  const StageTimings& timings() const { return timings_; }

 private:
  using Clock = std::chrono::steady_clock;
  void close_stage() {
    if (stage_.empty()) return;
    const auto now = Clock::now();
    timings_.stages.push_back({stage_, std::chrono::duration<double>(now - start_).count(), session_, utc_timestamp()});
    start_ = now;
  }
  void save() {
    if (!writes_) return;
    try {
      timings_.save(dir_);
    } catch (const std::exception& e) {
      log::warn("report: could not write ", (dir_ / StageTimings::kFileName).string(), ": ", e.what());
    }
  }
  std::filesystem::path dir_;
  ReportOptions options_;
  StageTimings timings_;
  int session_ = 0;
  std::string stage_;
  Clock::time_point start_;
  bool writes_ = true;
};

// Trainer callback: rewrites the report after every epoch, so training curves appear while a run trains.
class ReportEachEpoch {
 public:
  static constexpr train::HookSet hooks{train::Hook::on_epoch_end};
  explicit ReportEachEpoch(RunRecorder& recorder) : recorder_(&recorder) {}
  template <typename T>
  void on_epoch_end(T&, int64_t) {
    recorder_->refresh();
  }

 private:
  RunRecorder* recorder_;
};

}  // namespace taxon::report
