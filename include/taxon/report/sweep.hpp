#pragma once
// A sweep: one adaptation per value of one clustering parameter (cluster ratio or number of clusters), every one
// from the same starting model, each in its own run directory under the sweep's directory:
//
//   RUN/config.json        the sweep's options; "cluster_ratio_sweep" or "clusters_sweep" lists the values
//   RUN/ratio-0.1/ ...     one ordinary run directory per value (its own report.html)
//   RUN/sweep.csv          one row per value: the retrieval metrics after training (written by this header)
//   RUN/report.html        the values side by side: metric per value, and the comparison with the starting point
//
// This header owns the sweep's layout (directory names) and sweep.csv.
#include "taxon/core/error.hpp"
#include "taxon/io/atomic_file.hpp"
#include "taxon/report/chart.hpp"
#include "taxon/report/html.hpp"
#include "taxon/report/run.hpp"
#include "taxon/report/sections.hpp"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace taxon::report {

enum class SweepParameter { cluster_ratio, clusters };

inline std::string to_string(SweepParameter p) { return p == SweepParameter::clusters ? "clusters" : "cluster_ratio"; }

// The config.json key that lists a sweep's values.
inline std::string sweep_config_key(SweepParameter p) {
  return p == SweepParameter::clusters ? "clusters_sweep" : "cluster_ratio_sweep";
}

// "500", "0.1", "0.001", "1e-05": whole numbers as such, others in the shortest form that reads back the same.
inline std::string sweep_value_text(double v) {
  char buf[40];
  if (v == std::floor(v) && std::abs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
    return buf;
  }
  for (int digits = 1; digits <= 17; ++digits) {
    std::snprintf(buf, sizeof buf, "%.*g", digits, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

// The run directory of one value, relative to the sweep's: ratio-0.1, clusters-500.
inline std::string sweep_dir_name(SweepParameter p, double value) {
  return (p == SweepParameter::clusters ? "clusters-" : "ratio-") + sweep_value_text(value);
}

struct SweepPoint {
  double value = 0;
  std::filesystem::path dir;
};

struct Sweep {
  SweepParameter parameter = SweepParameter::cluster_ratio;
  std::vector<SweepPoint> points;  // in the order the values were given
};

// The sweep a run directory's config.json describes; nullopt for an ordinary run (no list, or a single value).
inline std::optional<Sweep> sweep_of(const RunRecord& run) {
  if (!run.config.is_object()) return std::nullopt;
  for (auto p : {SweepParameter::cluster_ratio, SweepParameter::clusters}) {
    const auto key = sweep_config_key(p);
    if (!run.config.contains(key) || !run.config.at(key).is_array() || run.config.at(key).size() < 2) continue;
    Sweep s;
    s.parameter = p;
    for (const auto& v : run.config.at(key)) {
      TAXON_CHECK(v.is_number(), "report.bad-run-file", (run.dir / "config.json").string(), ": '", key,
                  "' must list numbers, got ", v.dump());
      s.points.push_back({v.get<double>(), run.dir / sweep_dir_name(p, v.get<double>())});
    }
    return s;
  }
  return std::nullopt;
}

// One row of sweep.csv: a value, the pseudo-classes k-means made of it (round 0), and the metrics after training.
struct SweepRow {
  double value = 0;
  std::string run;         // directory name, relative to the sweep
  int64_t pseudo_classes = -1;  // -1: not clustered yet
  bool finished = false;
  double recall_at_1 = std::nan(""), recall_at_5 = std::nan(""), map_at_r = std::nan(""), r_precision = std::nan("");
  double accuracy_individual = std::nan("");
  double before_recall_at_1 = std::nan(""), before_map_at_r = std::nan("");
};

inline std::vector<SweepRow> sweep_rows(const Sweep& sweep, const std::vector<RunRecord>& runs) {
  std::vector<SweepRow> rows;
  for (size_t i = 0; i < sweep.points.size() && i < runs.size(); ++i) {
    const auto& r = runs[i];
    SweepRow row;
    row.value = sweep.points[i].value;
    row.run = sweep.points[i].dir.filename().string();
    if (!r.rounds.empty() && !r.rounds.front().cluster_sizes.empty())
      row.pseudo_classes = static_cast<int64_t>(r.rounds.front().cluster_sizes.size());
    row.finished = r.finished();
    if (r.retrieval.is_object() && r.retrieval.contains("after")) {
      const auto& m = r.retrieval.at("after");
      row.recall_at_1 = json_number(m, "recall_at_1");
      row.recall_at_5 = json_number(m, "recall_at_5");
      row.map_at_r = json_number(m, "map_at_r");
      row.r_precision = json_number(m, "r_precision");
      row.accuracy_individual = json_number(m, "accuracy_individual_all");
    }
    if (r.retrieval.is_object() && r.retrieval.contains("before")) {
      row.before_recall_at_1 = json_number(r.retrieval.at("before"), "recall_at_1");
      row.before_map_at_r = json_number(r.retrieval.at("before"), "map_at_r");
    }
    rows.push_back(row);
  }
  return rows;
}

// sweep.csv: fractions as plain numbers (6 decimals), empty cells for what a run has not recorded yet.
inline std::string sweep_csv(SweepParameter p, const std::vector<SweepRow>& rows) {
  const auto cell = [](double v) {
    if (!std::isfinite(v)) return std::string();
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.6f", v);
    return std::string(buf);
  };
  std::string csv = to_string(p) +
                    ",run,pseudo_classes,finished,recall_at_1,recall_at_5,map_at_r,r_precision,accuracy_individual,"
                    "before_recall_at_1,before_map_at_r\n";
  for (const auto& r : rows)
    csv += sweep_value_text(r.value) + "," + r.run + "," + (r.pseudo_classes >= 0 ? std::to_string(r.pseudo_classes) : "") + "," +
           (r.finished ? "yes" : "no") + "," + cell(r.recall_at_1) + "," + cell(r.recall_at_5) + "," + cell(r.map_at_r) + "," +
           cell(r.r_precision) + "," + cell(r.accuracy_individual) + "," + cell(r.before_recall_at_1) + "," +
           cell(r.before_map_at_r) + "\n";
  return csv;
}

inline std::string sweep_point_label(SweepParameter p, const SweepRow& r) {
  std::string label = (p == SweepParameter::clusters ? "k " : "ratio ") + sweep_value_text(r.value);
  if (p == SweepParameter::cluster_ratio && r.pseudo_classes >= 0) label += " (k=" + std::to_string(r.pseudo_classes) + ")";
  return label;
}

// Recall@1 and MAP@R after training, one group of bars per value (the values are categories: a ratio sweep spans
// decades, which a linear axis would crush into one corner).
inline BarChart sweep_chart(SweepParameter p, const std::vector<SweepRow>& rows) {
  BarChart c;
  c.id = "sweep-chart";
  c.title = "Retrieval after training, per " + std::string(p == SweepParameter::clusters ? "number of clusters" : "cluster ratio");
  c.category_axis.label = p == SweepParameter::clusters ? "pseudo-classes asked for" : "cluster ratio (pseudo-classes made)";
  c.value_axis = Axis{"value (%)", true, 0.0, 1.0};
  BarSeries r1{"Recall@1", palette::blue, {}}, map{"MAP@R", palette::green, {}};
  for (const auto& r : rows) {
    c.categories.push_back(sweep_point_label(p, r));
    r1.values.push_back(r.recall_at_1);
    map.values.push_back(r.map_at_r);
  }
  c.series = {r1, map};
  if (!rows.empty() && std::isfinite(rows.front().before_recall_at_1))
    c.caption = "Every value starts from the same model: before training Recall@1 " + percent(rows.front().before_recall_at_1) +
                ", MAP@R " + percent(rows.front().before_map_at_r) + ".";
  return c;
}

// The comparison table and chart: the starting point (and raw pixels) as recorded by the first run that has them,
// then each value after training, with deltas against the starting point.
inline Comparison sweep_comparison(SweepParameter p, const std::vector<SweepRow>& rows, const std::vector<RunRecord>& runs) {
  Comparison c;
  c.id = "sweep-comparison";
  c.title = "Values compared with the starting point";
  c.row_heading = "model";
  for (const auto& [key, name] : retrieval_metrics()) c.columns.push_back({name, true});
  for (const auto& r : runs) {
    if (!r.retrieval.is_object() || !r.retrieval.contains("before")) continue;
    for (const std::string model : {"raw-pixels", "before"}) {
      if (!r.retrieval.contains(model)) continue;
      Comparison::Row row{model_display_name(model), model_color(model, 0), {}};
      for (const auto& [key, name] : retrieval_metrics()) row.values.push_back(json_number(r.retrieval.at(model), key));
      if (model == "before") c.reference_row = static_cast<int64_t>(c.rows.size());
      c.rows.push_back(std::move(row));
    }
    break;
  }
  for (size_t i = 0; i < rows.size() && i < runs.size(); ++i) {
    Comparison::Row row{sweep_point_label(p, rows[i]), palette::cycle()[(i + 2) % palette::cycle().size()], {}};
    const nlohmann::json m = runs[i].retrieval.is_object() && runs[i].retrieval.contains("after") ? runs[i].retrieval.at("after") : nlohmann::json();
    for (const auto& [key, name] : retrieval_metrics()) row.values.push_back(json_number(m, key));
    c.rows.push_back(std::move(row));
  }
  c.caption = "Leave-one-out retrieval on the evaluation set; deltas against the starting model (before training).";
  return c;
}

struct SweepReport {
  std::filesystem::path report, csv;
  std::vector<SweepRow> rows;
};

// Reads the sweep's run directories (missing ones show as not recorded) and writes RUN/sweep.csv and
// RUN/report.html atomically.
inline SweepReport write_sweep_report(const std::filesystem::path& sweep_dir, const Sweep& sweep, const std::string& title = {}) {
  std::vector<RunRecord> runs;
  for (const auto& p : sweep.points) {
    if (io::path_exists(p.dir)) {
      runs.push_back(read_run(p.dir));
    } else {
      RunRecord absent;
      absent.dir = p.dir;
      absent.label = p.dir.filename().string();
      runs.push_back(std::move(absent));
    }
  }
  SweepReport out{sweep_dir / "report.html", sweep_dir / "sweep.csv", sweep_rows(sweep, runs)};
  io::write_text_atomically(out.csv, sweep_csv(sweep.parameter, out.rows));

  size_t finished = 0;
  for (const auto& r : out.rows) finished += r.finished;
  const std::string status = finished == out.rows.size() ? "finished" : "incomplete";
  Page page(title.empty() ? "taxon sweep: " + sweep_dir.filename().string() : title,
            "<code>" + escape(std::filesystem::absolute(sweep_dir).lexically_normal().string()) + "</code> \u00b7 " +
                std::to_string(finished) + " of " + std::to_string(out.rows.size()) + " values finished",
            status);
  page.add({"sweep", "Sweep over " + to_string(sweep.parameter), figure(sweep_chart(sweep.parameter, out.rows)), finished > 0});
  page.add({"comparison", "Comparison", comparison_html(sweep_comparison(sweep.parameter, out.rows, runs)), finished > 0});
  std::string links = "<ul>";
  for (const auto& r : out.rows)
    links += "<li><a href=\"" + escape(r.run) + "/report.html\">" + escape(sweep_point_label(sweep.parameter, r)) + "</a>" +
             (r.finished ? "" : " (not finished)") + "</li>";
  links += "</ul><p>The table as CSV: <a href=\"sweep.csv\">sweep.csv</a>.</p>";
  page.add({"runs", "Run reports", links, true});
  io::write_text_atomically(out.report, page.html());
  return out;
}

}  // namespace taxon::report
