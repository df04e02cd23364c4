#pragma once
// The report's sections, each built from a RunRecord (or several, for comparisons) into HTML, and the Page that
// holds them. A section whose files are absent says so ("not recorded in this run") instead of disappearing,
// so a reader knows the difference between "nothing happened" and "this run did not record it".
//
// Comparisons are generic: rows (models of one run, or runs of a sweep) x metric columns, rendered as a table with
// deltas against a reference row and a grouped bar chart. compare_runs() builds one across runs (e.g. one
// adaptation per cluster ratio from the same start), so a sweep report is a Page with that section first.
#include "taxon/io/json.hpp"
#include "taxon/report/chart.hpp"
#include "taxon/report/html.hpp"
#include "taxon/report/run.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace taxon::report {

// ---------------------------------------------------------------------------------------------------------------
// Names and colours of the models a run evaluates, the same in every table and chart.

inline std::string model_display_name(const std::string& model) {
  if (model == "raw-pixels") return "raw pixels";
  if (model == "before") return "before training";
  if (model == "after") return "after training";
  return model;
}

// raw pixels grey, before orange, after blue; anything else takes the next unused palette colour.
inline std::string model_color(const std::string& model, size_t index) {
  if (model == "raw-pixels") return palette::grey;
  if (model == "before") return palette::orange;
  if (model == "after") return palette::blue;
  static const std::vector<std::string> rest = {palette::green, palette::purple, palette::vermillion, palette::sky, palette::black};
  return rest[index % rest.size()];
}

inline std::string not_recorded(const std::string& why = {}) {
  return "<p class=\"missing\">Not recorded in this run" + (why.empty() ? std::string(".") : ": " + escape(why)) + "</p>";
}

// ---------------------------------------------------------------------------------------------------------------
// Pivoting a CSV with a `model` column (eval_table.csv, zero_shot.csv): one row per key, models side by side.

// "71.25%" -> 0.7125; "nan%" -> NaN; anything else -> nullopt.
inline std::optional<double> parse_percent(const std::string& s) {
  if (s.size() < 2 || s.back() != '%') return std::nullopt;
  const std::string body = s.substr(0, s.size() - 1);
  if (body == "nan" || body == "-nan" || body == "n/a") return std::nan("");
  try {
    size_t used = 0;
    const double v = std::stod(body, &used);
    if (used != body.size()) return std::nullopt;
    return v / 100.0;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

struct Pivot {
  std::vector<std::string> key_columns;  // e.g. taxa, column
  std::vector<std::string> metrics;      // the percent columns
  std::vector<std::string> models;       // in order of first appearance
  struct Row {
    std::vector<std::string> keys;
    std::vector<std::vector<double>> values;  // [metric][model], NaN where the model has no such row
  };
  std::vector<Row> rows;

  int64_t model_index(const std::string& m) const {
    const auto it = std::find(models.begin(), models.end(), m);
    return it == models.end() ? -1 : it - models.begin();
  }
  int64_t key_index(const std::string& k) const {
    const auto it = std::find(key_columns.begin(), key_columns.end(), k);
    return it == key_columns.end() ? -1 : it - key_columns.begin();
  }
  // The model deltas are measured against: "before" when present, else the first.
  int64_t reference() const {
    const auto b = model_index("before");
    return b >= 0 ? b : 0;
  }
};

inline Pivot pivot_by_model(const data::CsvTable& t) {
  Pivot p;
  TAXON_CHECK(t.has_column("model"), "report.bad-run-file", t.source(), ": no 'model' column to compare models by");
  const int64_t model_col = t.column("model");
  std::vector<int64_t> metric_cols, key_cols;
  for (int64_t c = 0; c < static_cast<int64_t>(t.header().size()); ++c) {
    if (c == model_col) continue;
    bool any = false, all_percent = true;
    for (int64_t r = 0; r < t.num_rows() && all_percent; ++r) {
      const auto& cell = t.cell(r, c);
      if (cell.empty()) continue;
      any = true;
      all_percent = parse_percent(cell).has_value();
    }
    if (any && all_percent) {
      metric_cols.push_back(c);
      p.metrics.push_back(t.header()[static_cast<size_t>(c)]);
    } else {
      key_cols.push_back(c);
      p.key_columns.push_back(t.header()[static_cast<size_t>(c)]);
    }
  }
  for (int64_t r = 0; r < t.num_rows(); ++r)
    if (p.model_index(t.cell(r, model_col)) < 0) p.models.push_back(t.cell(r, model_col));
  std::map<std::vector<std::string>, size_t> row_of;
  for (int64_t r = 0; r < t.num_rows(); ++r) {
    std::vector<std::string> keys;
    for (auto c : key_cols) keys.push_back(t.cell(r, c));
    auto it = row_of.find(keys);
    if (it == row_of.end()) {
      it = row_of.emplace(keys, p.rows.size()).first;
      p.rows.push_back({keys, std::vector<std::vector<double>>(metric_cols.size(), std::vector<double>(p.models.size(), std::nan("")))});
    }
    const auto m = static_cast<size_t>(p.model_index(t.cell(r, model_col)));
    for (size_t k = 0; k < metric_cols.size(); ++k) {
      const auto v = parse_percent(t.cell(r, metric_cols[k]));
      p.rows[it->second].values[k][m] = v ? *v : std::nan("");
    }
  }
  return p;
}

// Delta cell in percentage points, coloured and marked with an arrow (readable without colour).
inline Cell delta_cell(double delta_fraction) {
  if (!std::isfinite(delta_fraction)) return Cell::num("n/a");
  const double pp = 100.0 * delta_fraction;
  char buf[48];
  if (std::abs(pp) < 0.005) return Cell::num("\u00b10.00", "same");
  std::snprintf(buf, sizeof buf, "%s %+.2f", pp > 0 ? "\u25b2" : "\u25bc", pp);
  Cell c = Cell::num(buf, pp > 0 ? "up" : "down");
  c.title = "change in percentage points";
  return c;
}

// Models side by side per metric (values in %, the unit in the group header to keep the table narrow), the best
// value of each group in bold, and "last model - reference" deltas in percentage points.
inline Table pivot_table(const Pivot& p) {
  Table t;
  t.css_class = "pivot";
  const size_t nm = p.models.size();
  const int64_t ref = p.reference(), last = static_cast<int64_t>(nm) - 1;
  const bool with_delta = nm >= 2 && last != ref;
  std::vector<HeaderCell> top, second;
  for (const auto& k : p.key_columns) top.push_back({"", 1}), second.push_back({k, 1});
  for (const auto& m : p.metrics) {
    top.push_back({m + " (%)", static_cast<int>(nm + (with_delta ? 1 : 0)), true});
    for (const auto& model : p.models) second.push_back({model == "raw-pixels" ? "raw pixels" : model, 1, true});
    if (with_delta) second.push_back({"\u0394", 1, true});
  }
  if (with_delta)
    t.caption = "\u0394 = " + model_display_name(p.models[static_cast<size_t>(last)]) + " \u2212 " +
                model_display_name(p.models[static_cast<size_t>(ref)]) + ", in percentage points.";
  t.header_rows = {top, second};
  for (const auto& row : p.rows) {
    std::vector<Cell> cells;
    for (const auto& k : row.keys) cells.push_back(Cell::text(k));
    for (size_t k = 0; k < p.metrics.size(); ++k) {
      double best = -std::numeric_limits<double>::infinity();
      for (double v : row.values[k])
        if (std::isfinite(v)) best = std::max(best, v);
      for (size_t m = 0; m < nm; ++m) {
        const double v = row.values[k][m];
        cells.push_back(Cell::num(fixed(100 * v, 2), nm > 1 && std::isfinite(v) && v == best ? "best" : ""));
      }
      if (with_delta) cells.push_back(delta_cell(row.values[k][static_cast<size_t>(last)] - row.values[k][static_cast<size_t>(ref)]));
    }
    t.rows.push_back(std::move(cells));
  }
  return t;
}

// A grouped bar chart of one metric of a pivot: rows passing `keep`, categories from key column `category_key`.
template <typename Keep>
BarChart pivot_chart(const Pivot& p, const std::string& id, const std::string& title, size_t metric,
                     const std::string& category_key, const std::string& category_label, Keep keep) {
  BarChart c;
  c.id = id;
  c.title = title;
  c.category_axis.label = category_label;
  c.value_axis = {p.metrics[metric] + " (%)", true, 0.0, 1.0};
  const int64_t key = p.key_index(category_key);
  std::vector<const Pivot::Row*> rows;
  for (const auto& r : p.rows)
    if (keep(r)) rows.push_back(&r), c.categories.push_back(key >= 0 ? r.keys[static_cast<size_t>(key)] : "");
  for (size_t m = 0; m < p.models.size(); ++m) {
    BarSeries s{model_display_name(p.models[m]), model_color(p.models[m], m), {}};
    for (const auto* r : rows) s.values.push_back(r->values[metric][m]);
    c.series.push_back(std::move(s));
  }
  return c;
}

// ---------------------------------------------------------------------------------------------------------------
// Generic comparisons: rows (models or runs) x metric columns.

struct Comparison {
  std::string id, title, caption;
  std::string row_heading = "model";
  struct Column {
    std::string name;
    bool percent = true;
  };
  std::vector<Column> columns;
  struct Row {
    std::string name, color;
    std::vector<double> values;  // one per column, NaN when absent
  };
  std::vector<Row> rows;
  int64_t reference_row = -1;  // deltas of the other rows against this one (-1: none)
};

inline std::string comparison_html(const Comparison& c) {
  Table t;
  t.css_class = "comparison";
  std::vector<HeaderCell> head{{c.row_heading, 1}};
  for (const auto& col : c.columns) head.push_back({col.name, 1, true});
  const bool with_delta = c.reference_row >= 0 && c.rows.size() > 1;
  if (with_delta)
    for (const auto& col : c.columns) head.push_back({"\u0394 " + col.name, 1, true});
  t.header_rows = {head};
  for (size_t ri = 0; ri < c.rows.size(); ++ri) {
    const auto& r = c.rows[ri];
    std::vector<Cell> cells{Cell::text(r.name)};
    for (size_t k = 0; k < c.columns.size(); ++k) {
      double best = -std::numeric_limits<double>::infinity();
      for (const auto& other : c.rows)
        if (k < other.values.size() && std::isfinite(other.values[k])) best = std::max(best, other.values[k]);
      const double v = k < r.values.size() ? r.values[k] : std::nan("");
      cells.push_back(Cell::num(c.columns[k].percent ? percent(v) : number(v), c.rows.size() > 1 && std::isfinite(v) && v == best ? "best" : ""));
    }
    if (with_delta)
      for (size_t k = 0; k < c.columns.size(); ++k) {
        if (static_cast<int64_t>(ri) == c.reference_row) {
          cells.push_back(Cell::num("reference", "same"));
          continue;
        }
        const auto& ref = c.rows[static_cast<size_t>(c.reference_row)].values;
        const double v = k < r.values.size() ? r.values[k] : std::nan(""), rv = k < ref.size() ? ref[k] : std::nan("");
        cells.push_back(c.columns[k].percent ? delta_cell(v - rv) : Cell::num(number(v - rv)));
      }
    t.rows.push_back(std::move(cells));
  }
  BarChart chart;
  chart.id = c.id + "-chart";
  chart.title = c.title;
  bool all_percent = true;
  for (const auto& col : c.columns) {
    chart.categories.push_back(col.name);
    all_percent = all_percent && col.percent;
  }
  chart.category_axis.label = "metric";
  chart.value_axis = all_percent ? Axis{"value (%)", true, 0.0, 1.0} : Axis{"value", false};
  for (size_t ri = 0; ri < c.rows.size(); ++ri)
    chart.series.push_back({c.rows[ri].name, c.rows[ri].color.empty() ? palette::cycle()[ri % palette::cycle().size()] : c.rows[ri].color, c.rows[ri].values});
  return "<div class=\"pair\">" + t.html() + figure(chart) + "</div>" + (c.caption.empty() ? "" : "<p class=\"caption\">" + escape(c.caption) + "</p>");
}

// The retrieval metrics in retrieval.json (one entry per model) that the comparisons show.
inline const std::vector<std::pair<std::string, std::string>>& retrieval_metrics() {
  static const std::vector<std::pair<std::string, std::string>> m = {
      {"recall_at_1", "Recall@1"}, {"recall_at_5", "Recall@5"}, {"map_at_r", "MAP@R"}, {"r_precision", "R-precision"}};
  return m;
}

inline double json_number(const nlohmann::json& j, const std::string& key) {
  if (!j.is_object() || !j.contains(key) || !j.at(key).is_number()) return std::nan("");
  return j.at(key).get<double>();
}

// One row per model of one run's retrieval.json; deltas against "before".
inline Comparison retrieval_comparison(const RunRecord& run) {
  Comparison c;
  c.id = "retrieval";
  c.title = "Recall@K and MAP@R";
  for (const auto& [key, name] : retrieval_metrics()) c.columns.push_back({name, true});
  if (!run.retrieval.is_object()) return c;
  std::string rank, definition;
  size_t i = 0;
  for (const auto& [model, m] : run.retrieval.items()) {
    Comparison::Row row{model_display_name(model), model_color(model, i++), {}};
    if (m.is_object() && m.contains("recall_definition") && m.at("recall_definition").is_string())
      definition = m.at("recall_definition").get<std::string>();
    for (const auto& [key, name] : retrieval_metrics()) row.values.push_back(json_number(m, key));
    if (model == "before") c.reference_row = static_cast<int64_t>(c.rows.size());
    if (m.is_object() && m.contains("rank") && m.at("rank").is_string()) rank = m.at("rank").get<std::string>();
    c.rows.push_back(std::move(row));
  }
  // Which queries Recall@K averages over (eval::RecallDefinition); runs made before it was recorded used pml's.
  const std::string which =
      definition == "unicom" ? " (UNICOM's definition: a query whose class has no other image counts as a miss)"
      : definition == "pml"  ? " (pytorch-metric-learning's definition: a query whose class has no other image is excluded)"
                             : " (definition not recorded in this run: pytorch-metric-learning's, lone queries excluded)";
  c.caption = "Leave-one-out retrieval over the evaluation set" + (rank.empty() ? std::string() : " at rank '" + rank + "'") +
              ": Recall@K = a query's K nearest neighbours include its class" + which +
              "; MAP@R = mean average precision over the R nearest neighbours, R = the query's class size - 1.";
  return c;
}

// One row per run (e.g. the runs of a cluster-ratio sweep) with `model`'s retrieval metrics; deltas against the
// first run unless `reference` names another.
inline Comparison compare_runs(const std::vector<RunRecord>& runs, const std::string& model = "after",
                               const std::string& reference = {}) {
  Comparison c;
  c.id = "runs";
  c.title = "Runs compared (" + model_display_name(model) + ")";
  c.row_heading = "run";
  for (const auto& [key, name] : retrieval_metrics()) c.columns.push_back({name, true});
  for (size_t i = 0; i < runs.size(); ++i) {
    const auto& r = runs[i];
    const nlohmann::json m = r.retrieval.is_object() && r.retrieval.contains(model) ? r.retrieval.at(model) : nlohmann::json();
    Comparison::Row row{r.label, palette::cycle()[i % palette::cycle().size()], {}};
    for (const auto& [key, name] : retrieval_metrics()) row.values.push_back(json_number(m, key));
    if (r.label == reference) c.reference_row = static_cast<int64_t>(i);
    c.rows.push_back(std::move(row));
  }
  if (c.reference_row < 0 && !runs.empty()) c.reference_row = 0;
  return c;
}

// ---------------------------------------------------------------------------------------------------------------
// Sections of one run.

struct Section {
  std::string id, title, html;
  bool recorded = true;  // false: the run has nothing for this section
};

inline Section summary_section(const RunRecord& run) {
  Section s{"summary", "Summary", {}, true};
  std::string h = "<div class=\"cards\">";
  const auto card = [&](const std::string& metric_key, const std::string& name) {
    if (!run.retrieval.is_object()) return;
    const auto& j = run.retrieval;
    const std::string best_model = j.contains("after") ? "after" : j.contains("before") ? "before" : "";
    if (best_model.empty()) return;
    const double v = json_number(j.at(best_model), metric_key);
    std::string sub;
    if (best_model == "after" && j.contains("before")) {
      const double d = v - json_number(j.at("before"), metric_key);
      if (std::isfinite(d))
        sub += std::string("<span class=\"") + (d >= 0 ? "up" : "down") + "\">" + (d >= 0 ? "\u25b2 +" : "\u25bc ") + fixed(100 * d, 2) + " pp</span> vs before training";
    }
    if (j.contains("raw-pixels")) sub += (sub.empty() ? "" : "; ") + std::string("raw pixels ") + percent(json_number(j.at("raw-pixels"), metric_key));
    h += "<div class=\"card\"><div class=\"label\">" + escape(name) + " \u00b7 " + escape(model_display_name(best_model)) +
         "</div><div class=\"big\">" + percent(v) + "</div><div class=\"sub\">" + sub + "</div></div>";
  };
  card("recall_at_1", "Recall@1");
  card("map_at_r", "MAP@R");
  if (run.timings) h += "<div class=\"card\"><div class=\"label\">wall time</div><div class=\"big\">" + escape(duration(run.timings->total_seconds())) + "</div><div class=\"sub\">" + std::to_string(run.timings->stages.size()) + " stages recorded</div></div>";
  h += "</div>";
  if (h == "<div class=\"cards\"></div>") h = not_recorded("no evaluation yet");

  // What the run does, in one sentence, from whatever config keys it has.
  if (run.config.is_object()) {
    std::string what;
    const auto str = [&](const char* k) { return run.config_value<std::string>(k, ""); };
    if (!str("dataset").empty()) what += "dataset <b>" + escape(str("dataset")) + "</b>";
    if (!str("model").empty()) what += std::string(what.empty() ? "" : ", ") + "model <b>" + escape(str("model")) + "</b>";
    if (!str("weights").empty()) what += " from <code>" + escape(str("weights")) + "</code>";
    const std::string labels_from = str("labels_from");
    if (!labels_from.empty()) what += ", trained on true labels (<b>" + escape(labels_from) + "</b>)";
    else if (run.config_value<int64_t>("clusters", 0) > 0) what += ", " + escape(count(run.config_value<int64_t>("clusters", 0))) + " pseudo-classes";
    else if (run.config.contains("cluster_ratio")) what += ", pseudo-classes = " + escape(number(run.config_value<double>("cluster_ratio", 0))) + " \u00d7 images";
    if (run.config.contains("rounds")) what += ", " + std::to_string(run.config_value<int>("rounds", 1)) + " round(s) of " + std::to_string(run.config_value<int>("epochs", 0)) + " epoch(s)";
    if (!what.empty()) h = "<p>" + what + ".</p>" + h;
  }
  s.html = h;
  return s;
}

inline Section config_section(const RunRecord& run) {
  Section s{"config", "Configuration", {}, run.config.is_object()};
  if (!s.recorded) {
    s.html = not_recorded("no config.json");
    return s;
  }
  Table t;
  t.css_class = "config";
  t.header_rows = {{{"option", 1}, {"value", 1}}};
  for (const auto& [key, value] : run.config.items()) {
    std::string v;
    if (value.is_string()) v = value.get<std::string>();
    else if (value.is_array()) {
      for (const auto& e : value) v += (v.empty() ? "" : ", ") + (e.is_string() ? e.get<std::string>() : io::dump_json(e));
      if (value.empty()) v = "(none)";
    } else v = io::dump_json(value);
    if (value.is_string() && v.empty()) v = "(empty)";
    t.rows.push_back({Cell::text(key), {"<code>" + escape(v) + "</code>", false, {}, {}}});
  }
  t.caption = "config.json: pass it back with --config to repeat the run.";
  s.html = t.html();
  return s;
}

inline Section evaluation_section(const RunRecord& run) {
  Section s{"evaluation", "The seeds' table: before and after", {}, run.eval_table.has_value()};
  if (!run.eval_table) {
    s.html = not_recorded("no eval_table.csv yet (written after the baseline evaluation)");
    return s;
  }
  Pivot p;
  try {
    p = pivot_by_model(*run.eval_table);
  } catch (const std::exception& e) {
    s.html = "<p class=\"problem\">" + escape(e.what()) + "</p>";
    return s;
  }
  std::string h = "<p>Nearest-neighbour classification of held-out images (the NFHM/BioCosmos protocol: a seeded 80/20 "
                  "query/gallery split). Bold: the best model in each group; \u0394 in percentage points, "
                  "<span class=\"up\">\u25b2 better</span> / <span class=\"down\">\u25bc worse</span>.</p>";
  h += pivot_table(p).html();
  const int64_t taxa = p.key_index("taxa"), column = p.key_index("column");
  const size_t metric = 0;  // accuracy_individual, the seeds' headline number
  if (taxa >= 0 && column >= 0 && !p.metrics.empty()) {
    std::string all = "All";
    if (std::none_of(p.rows.begin(), p.rows.end(), [&](const auto& r) { return r.keys[static_cast<size_t>(taxa)] == "All"; }) && !p.rows.empty())
      all = p.rows.front().keys[static_cast<size_t>(taxa)];
    const std::string first_rank = p.rows.empty() ? "" : p.rows.front().keys[static_cast<size_t>(column)];
    h += "<div class=\"charts\">";
    auto by_rank = pivot_chart(p, "accuracy-per-rank", "Accuracy per rank (" + all + ")", metric, "column", "rank",
                               [&](const Pivot::Row& r) { return r.keys[static_cast<size_t>(taxa)] == all; });
    h += figure(by_rank);
    auto by_group = pivot_chart(p, "accuracy-per-group", "Accuracy per taxa group at rank '" + first_rank + "'", metric, "taxa",
                                "taxa group", [&](const Pivot::Row& r) {
                                  return r.keys[static_cast<size_t>(column)] == first_rank && r.keys[static_cast<size_t>(taxa)] != "All";
                                });
    if (by_group.categories.empty()) h += "<p class=\"missing\">One taxa group only: no per-group chart.</p>";
    else h += figure(by_group);
    h += "</div>";
  }
  s.html = h;
  return s;
}

inline Section retrieval_section(const RunRecord& run) {
  Section s{"retrieval", "Recall@K and MAP@R", {}, run.retrieval.is_object()};
  if (!s.recorded) {
    s.html = not_recorded("no retrieval.json yet");
    return s;
  }
  s.html = comparison_html(retrieval_comparison(run));
  return s;
}

inline Section zero_shot_section(const RunRecord& run) {
  Section s{"zero-shot", "Zero-shot classification", {}, run.zero_shot.has_value()};
  if (!run.zero_shot) {
    s.html = not_recorded("no zero_shot.csv (the weights have no text tower, or the run has not finished)");
    return s;
  }
  try {
    const Pivot p = pivot_by_model(*run.zero_shot);
    std::string h = "<p>Each image's class is the text prompt its embedding is closest to; top-1 / top-5 accuracy per "
                    "prompt set, taxa group and rank.</p>" + pivot_table(p).html();
    const int64_t taxa = p.key_index("taxa"), prompts = p.key_index("prompts"), column = p.key_index("column");
    if (taxa >= 0 && prompts >= 0 && column >= 0 && !p.metrics.empty()) {
      Pivot labelled = p;  // categories "prompts · rank"
      for (auto& r : labelled.rows) r.keys[static_cast<size_t>(prompts)] += " \u00b7 " + r.keys[static_cast<size_t>(column)];
      h += "<div class=\"charts\">" + figure(pivot_chart(labelled, "zero-shot-chart", "Zero-shot " + p.metrics[0] + " (All)", 0, "prompts",
                                                         "prompt set \u00b7 rank",
                                                         [&](const Pivot::Row& r) { return r.keys[static_cast<size_t>(taxa)] == "All"; })) + "</div>";
    }
    s.html = h;
  } catch (const std::exception& e) {
    s.html = "<p class=\"problem\">" + escape(e.what()) + "</p>";
  }
  return s;
}

inline Section training_section(const RunRecord& run, size_t max_points) {
  Section s{"training", "Training curves", {}, !run.steps.empty()};
  if (run.steps.empty()) {
    s.html = not_recorded(run.config_value<int>("rounds", 1) > 0 && !run.rounds.empty() ? "no steps logged yet" : "no metrics.jsonl");
    return s;
  }
  // x = optimizer steps counted across rounds; each round's steps restart at 1 in metrics.jsonl.
  std::map<int, int64_t> offset, last_step;
  for (const auto& st : run.steps) last_step[st.round] = std::max(last_step[st.round], st.step);
  int64_t acc = 0;
  std::vector<Marker> markers;
  for (const auto& [round, last] : last_step) {
    offset[round] = acc;
    if (acc > 0 || round > 0) markers.push_back({static_cast<double>(acc), "round " + std::to_string(round)});
    acc += last;
  }
  std::vector<double> x, loss, lr, head_lr, grad, ips;
  for (const auto& st : run.steps) {
    x.push_back(static_cast<double>(offset[st.round] + st.step));
    loss.push_back(st.loss), lr.push_back(st.lr), head_lr.push_back(st.head_lr), grad.push_back(st.grad_norm);
    ips.push_back(st.images_per_second());
  }
  const bool decimated = run.steps.size() > max_points;
  // MetricsLog writes every N-th step and the last: a round's first logged step is N (unless it was resumed).
  int64_t first_logged = std::numeric_limits<int64_t>::max();
  for (size_t i = 0; i < run.steps.size(); ++i)
    if (i == 0 || run.steps[i].round != run.steps[i - 1].round) first_logged = std::min(first_logged, run.steps[i].step);
  const std::string every = first_logged >= 1 && first_logged < std::numeric_limits<int64_t>::max() ? std::to_string(first_logged) : "";
  const std::string caption = std::string("Logged") + (every.empty() || every == "1" ? " every step" : " every " + every + " steps") +
                              (decimated ? "; each point is the mean of " + std::to_string((run.steps.size() + max_points - 1) / max_points) + " logged steps" : "") + ".";
  const Axis step_axis{"optimizer step (all rounds)", false};
  const auto chart = [&](const std::string& id, const std::string& title, Axis y, std::vector<LineSeries> series) {
    LineChart c;
    c.id = id, c.title = title, c.caption = caption, c.x = step_axis, c.y = std::move(y), c.series = std::move(series), c.markers = markers;
    c.max_points = max_points;
    return c;
  };
  const auto any_finite = [](const std::vector<double>& v) { return std::any_of(v.begin(), v.end(), [](double d) { return std::isfinite(d); }); };

  // One row per round: what its curves say in numbers.
  Table t;
  t.header_rows = {{{"round", 1}, {"logged steps", 1, true}, {"last step", 1, true}, {"epochs", 1, true}, {"first loss", 1, true},
                    {"last loss", 1, true}, {"peak lr", 1, true}, {"images / s", 1, true}}};
  for (const auto& [round, last] : last_step) {
    int64_t logged = 0, max_epoch = 0;
    double first = std::nan(""), final_loss = std::nan(""), peak = std::nan(""), imgs = 0, secs = 0;
    for (const auto& st : run.steps) {
      if (st.round != round) continue;
      ++logged;
      max_epoch = std::max(max_epoch, st.epoch);
      if (!std::isfinite(first) && std::isfinite(st.loss)) first = st.loss;
      if (std::isfinite(st.loss)) final_loss = st.loss;
      if (std::isfinite(st.lr)) peak = std::isfinite(peak) ? std::max(peak, st.lr) : st.lr;
      if (std::isfinite(st.images) && st.seconds > 0) imgs += st.images, secs += st.seconds;
    }
    t.rows.push_back({Cell::text(std::to_string(round)), Cell::num(count(logged)), Cell::num(count(last)), Cell::num(std::to_string(max_epoch + 1)),
                      Cell::num(number(first)), Cell::num(number(final_loss)), Cell::num(number(peak, 3)), Cell::num(secs > 0 ? fixed(imgs / secs, 1) : "n/a")});
  }
  std::string h = t.html() + "<div class=\"charts\">";
  h += figure(chart("training-loss", "Training loss (margin-softmax cross-entropy)", {"loss", false}, {{"loss", palette::blue, x, loss}}));
  std::vector<LineSeries> lrs{{"backbone lr", palette::blue, x, lr}};
  if (any_finite(head_lr)) lrs.push_back({"head lr (PartialFC weights)", palette::orange, x, head_lr});
  Axis lr_axis{"learning rate (log)", false};
  lr_axis.log_scale = true;
  h += figure(chart("training-lr", "Learning rates", lr_axis, lrs));
  if (any_finite(grad)) h += figure(chart("training-grad-norm", "Gradient norm before clipping", {"gradient L2 norm", false}, {{"grad norm", palette::vermillion, x, grad}}));
  else h += "<div class=\"missing chart-missing\">Gradient norm: not recorded in this run (gradient clipping was off).</div>";
  Axis ips_axis{"throughput (images / s)", false};
  ips_axis.min = 0;
  h += figure(chart("training-throughput", "Training throughput", ips_axis, {{"images / s", palette::green, x, ips}}));
  s.html = h + "</div>";
  return s;
}

// Bins for cluster sizes: one per size up to 20, else doubling ranges 1, 2-3, 4-7, ...
inline std::vector<std::pair<int64_t, int64_t>> size_bins(int64_t max_size) {
  std::vector<std::pair<int64_t, int64_t>> bins;
  if (max_size <= 20) {
    for (int64_t v = 1; v <= std::max<int64_t>(max_size, 1); ++v) bins.push_back({v, v});
    return bins;
  }
  for (int64_t lo = 1; lo <= max_size; lo *= 2) bins.push_back({lo, std::min(lo * 2 - 1, max_size)});
  return bins;
}

inline Section clusters_section(const RunRecord& run) {
  Section s{"clusters", "Pseudo-classes", {}, false};
  std::vector<const RoundRecord*> clustered, measured;
  for (const auto& r : run.rounds) {
    if (!r.cluster_sizes.empty()) clustered.push_back(&r);
    if (r.quality) measured.push_back(&r);
  }
  const std::string labels_from = run.config_value<std::string>("labels_from", "");
  if (clustered.empty() && measured.empty()) {
    s.html = !labels_from.empty() ? "<p class=\"missing\">This run trained on true labels (labels_from = " + escape(labels_from) + "): no pseudo-classes.</p>"
                                  : not_recorded("no round-N/labels.npy yet");
    s.recorded = !labels_from.empty();
    return s;
  }
  s.recorded = true;
  std::string h, purity, charts;  // the two tables first, then their charts side by side
  if (!clustered.empty()) {
    Table t;
    t.header_rows = {{{"round", 1}, {"images", 1, true}, {"pseudo-classes", 1, true}, {"empty", 1, true}, {"singletons", 1, true},
                      {"smallest", 1, true}, {"median", 1, true}, {"largest", 1, true}}};
    int64_t max_size = 0;
    for (const auto* r : clustered) {
      std::vector<int64_t> sizes;
      int64_t images = 0, empty = 0, singletons = 0;
      for (auto v : r->cluster_sizes) {
        images += v;
        if (v == 0) ++empty;
        else sizes.push_back(v);
        if (v == 1) ++singletons;
      }
      std::sort(sizes.begin(), sizes.end());
      max_size = std::max(max_size, sizes.empty() ? 0 : sizes.back());
      const double median = sizes.empty() ? std::nan("") : sizes.size() % 2 ? static_cast<double>(sizes[sizes.size() / 2])
                                                                           : (sizes[sizes.size() / 2 - 1] + sizes[sizes.size() / 2]) / 2.0;
      t.rows.push_back({Cell::text(std::to_string(r->index)), Cell::num(count(images)), Cell::num(count(static_cast<int64_t>(sizes.size()))),
                        Cell::num(count(empty)), Cell::num(count(singletons)), Cell::num(sizes.empty() ? "n/a" : count(sizes.front())),
                        Cell::num(number(median)), Cell::num(sizes.empty() ? "n/a" : count(sizes.back()))});
    }
    BarChart hist;
    hist.id = "cluster-sizes";
    hist.title = "Cluster-size histogram";
    hist.category_axis.label = "images per pseudo-class";
    hist.value_axis.label = "pseudo-classes";
    hist.value_labels = true;
    const auto bins = size_bins(max_size);
    for (const auto& [lo, hi] : bins) hist.categories.push_back(lo == hi ? std::to_string(lo) : std::to_string(lo) + "\u2013" + std::to_string(hi));
    for (size_t i = 0; i < clustered.size(); ++i) {
      static const std::vector<std::string> round_colors = {palette::blue, palette::green, palette::purple, palette::vermillion, palette::sky, palette::black};
      BarSeries se{"round " + std::to_string(clustered[i]->index), round_colors[i % round_colors.size()], std::vector<double>(bins.size(), 0.0)};
      for (auto v : clustered[i]->cluster_sizes)
        for (size_t b = 0; b < bins.size(); ++b)
          if (v >= bins[b].first && v <= bins[b].second) se.values[b] += 1;
      hist.series.push_back(std::move(se));
    }
    hist.caption = "k-means on the training images; a pseudo-class is one cluster. Very small clusters give the margin loss few positives.";
    hist.skip_zero = true;
    h += t.html();
    charts += figure(hist);
  }
  if (measured.empty()) {
    purity = "<h3>Purity against known ranks</h3>" +
             not_recorded("no round-N/cluster_quality.json (a run made before taxon measured it); `taxon-unicom --resume " +
                          run.dir.string() + "` measures it from the saved labels.npy and the training images' ranks");
  } else {
    Table t;
    t.header_rows = {{{"round", 1}, {"rank", 1}, {"labelled images", 1, true}, {"classes", 1, true}, {"pseudo-classes", 1, true},
                      {"NMI", 1, true}, {"AMI", 1, true}, {"purity", 1, true}}};
    BarChart chart;
    chart.id = "cluster-purity";
    chart.title = "Agreement of pseudo-classes with each known rank";
    chart.category_axis.label = measured.size() > 1 ? "round \u00b7 rank" : "rank";
    chart.value_axis = {"agreement (0\u20131)", false, 0.0, 1.0};
    chart.series = {{"NMI", palette::blue, {}}, {"AMI", palette::green, {}}, {"purity", palette::orange, {}}};
    for (const auto* r : measured) {
      for (const auto& ra : r->quality->ranks) {
        const auto& a = ra.agreement;
        t.rows.push_back({Cell::text(std::to_string(r->index)), Cell::text(ra.rank), Cell::num(count(a.items)), Cell::num(count(a.classes)),
                          Cell::num(count(r->quality->clusters)), Cell::num(fixed(a.nmi, 3)), Cell::num(fixed(a.ami, 3)), Cell::num(percent(a.purity, 1))});
        chart.categories.push_back(measured.size() > 1 ? "round " + std::to_string(r->index) + " \u00b7 " + ra.rank : ra.rank);
        chart.series[0].values.push_back(a.nmi);
        chart.series[1].values.push_back(a.ami);
        chart.series[2].values.push_back(a.purity);
      }
    }
    chart.value_labels = true;
    chart.caption = "1 = the pseudo-classes are exactly the rank's classes; AMI 0 = no better than random clusters of the same sizes.";
    t.caption = "NMI: mutual information of clusters and classes over their mean entropy. AMI: the same, corrected for the "
                "agreement random clusters of these sizes would reach by chance (0 = chance, negative = worse). Purity: share "
                "of images whose cluster's most common class is theirs (rises with the number of clusters).";
    std::string unmeasured;  // rounds with pseudo-labels but no purity record
    for (const auto* r : clustered)
      if (!r->quality) unmeasured += (unmeasured.empty() ? "" : ", ") + std::to_string(r->index);
    purity = "<h3>Purity against known ranks</h3>" + t.html();
    if (!unmeasured.empty())
      purity += "<p class=\"missing\">Round(s) " + escape(unmeasured) + ": no cluster_quality.json; `taxon-unicom --resume " +
                escape(run.dir.string()) + "` measures it from the saved labels.</p>";
    charts += figure(chart);
  }
  s.html = h + purity + "<div class=\"charts\">" + charts + "</div>";
  return s;
}

// Images left out as unreadable (skipped_images.json): how many per set, then which, with the stage that found them
// and the loader's reason; at most `max_rows` listed.
inline Section skipped_section(const RunRecord& run, size_t max_rows = 200) {
  Section s{"skipped", "Skipped images", {}, true};
  if (run.skipped.empty()) {
    s.html = "<p>No images skipped: every image was read.</p>";
    return s;
  }
  const int64_t train = run.skipped.count("train"), eval = run.skipped.count("eval");
  std::string h = "<p><b>" + count(static_cast<int64_t>(run.skipped.images.size())) + "</b> unreadable image" +
                  (run.skipped.images.size() == 1 ? "" : "s") + " skipped (" + count(train) + " training, " + count(eval) +
                  " evaluation): left out of embedding, labels, clustering and evaluation alike.</p>";
  Table t;
  t.header_rows = {{{"set", 1}, {"row", 1, true}, {"file", 1}, {"stage", 1}, {"reason", 1}}};
  for (size_t i = 0; i < run.skipped.images.size() && i < max_rows; ++i) {
    const auto& im = run.skipped.images[i];
    t.rows.push_back({Cell::text(im.split), Cell::num(std::to_string(im.row)),
                      im.file.empty() ? Cell::text("n/a") : Cell{"<code>" + escape(im.file) + "</code>", false, {}, {}},
                      Cell::text(im.stage.empty() ? "n/a" : im.stage), Cell::text(im.error)});
  }
  t.caption = "row: the image's position in its set as loaded. The full list is in " + std::string(data::SkippedImages::kFileName) +
              (run.skipped.images.size() > max_rows
                   ? "; " + count(static_cast<int64_t>(run.skipped.images.size() - max_rows)) + " more are not shown here."
                   : ".");
  s.html = h + t.html();
  return s;
}

inline Section timing_section(const RunRecord& run) {
  Section s{"timing", "Time per stage", {}, run.timings.has_value() && !run.timings->stages.empty()};
  if (!s.recorded) {
    std::string h = not_recorded("no timings.json (made before taxon recorded stage timings)");
    double secs = 0;
    for (const auto& st : run.steps)
      if (std::isfinite(st.seconds)) secs += st.seconds;
    if (secs > 0) h += "<p>The logged training steps alone took " + escape(duration(secs)) + " (metrics.jsonl; steps between log lines not counted).</p>";
    s.html = h;
    return s;
  }
  const auto& t = *run.timings;
  Table table;
  table.header_rows = {{{"stage", 1}, {"session", 1, true}, {"wall time", 1, true}, {"share", 1, true}, {"finished (UTC)", 1}}};
  BarChart chart;
  chart.id = "stage-timing";
  chart.title = "Wall time per stage";
  chart.horizontal = true;
  chart.value_axis.label = "wall time (s)";
  chart.category_axis.label = "stage";
  chart.value_suffix = " s";
  chart.series = {{"seconds", palette::blue, {}}};
  const double total = t.total_seconds();
  for (const auto& st : t.stages) {
    const std::string name = st.stage + (st.session > 0 ? " (resume " + std::to_string(st.session) + ")" : "");
    chart.categories.push_back(name);
    chart.series[0].values.push_back(st.seconds);
    table.rows.push_back({Cell::text(st.stage), Cell::num(std::to_string(st.session)), Cell::num(duration(st.seconds)),
                          Cell::num(total > 0 ? percent(st.seconds / total, 1) : "n/a"), Cell::text(st.finished_at)});
  }
  table.rows.push_back({{"<b>total</b>", false, {}, {}}, Cell::num(""), {"<b>" + escape(duration(total)) + "</b>", true, {}, {}}, Cell::num(""), Cell::text("")});
  table.caption = "Session 0 is the first invocation; each --resume adds one.";
  s.html = "<div class=\"pair\">" + table.html() + figure(chart) + "</div>";
  return s;
}

inline Section files_section(const RunRecord& run, const fs::path& report_dir) {
  Section s{"files", "Files in the run directory", {}, !run.files.empty()};
  Table t;
  t.header_rows = {{{"file", 1}, {"size", 1, true}}};
  const auto human = [](uintmax_t b) {
    char buf[32];
    if (b < 1024) std::snprintf(buf, sizeof buf, "%ju B", b);
    else if (b < 1024 * 1024) std::snprintf(buf, sizeof buf, "%.1f KiB", static_cast<double>(b) / 1024);
    else if (b < 1024ull * 1024 * 1024) std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(b) / (1024 * 1024));
    else std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(b) / (1024.0 * 1024 * 1024));
    return std::string(buf);
  };
  std::error_code ec;
  for (const auto& f : run.files) {
    const bool is_dir = !f.path.empty() && f.path.back() == '/';
    const fs::path target = run.dir / (is_dir ? f.path.substr(0, f.path.size() - 1) : f.path);
    std::string href = fs::relative(target, report_dir, ec).generic_string();
    if (ec || href.empty()) href = fs::absolute(target, ec).generic_string();
    if (is_dir && (href.empty() || href.back() != '/')) href += '/';
    std::string name = "<a href=\"" + escape(href) + "\">" + escape(f.path) + "</a>";
    if (is_dir && f.files > 0) name += " <span class=\"muted\">(" + std::to_string(f.files) + " files)</span>";
    t.rows.push_back({{name, false, {}, {}}, Cell::num(is_dir && f.files == 0 ? "" : human(f.bytes))});
  }
  s.html = t.html();
  return s;
}

inline Section problems_section(const RunRecord& run) {
  Section s{"problems", "Files that could not be read", {}, true};
  std::string h = "<ul class=\"problems\">";
  for (const auto& p : run.problems) h += "<li>" + escape(p) + "</li>";
  s.html = h + "</ul>";
  return s;
}

// ---------------------------------------------------------------------------------------------------------------
// The page.

inline const char* report_css() {
  return R"css(
:root{--fg:#1f2328;--muted:#59636e;--line:#d8dee4;--soft:#f6f8fa;--up:#116329;--up-bg:#dafbe1;--down:#a40e26;--down-bg:#ffebe9;--accent:#0b3d5c}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 "DejaVu Sans","Segoe UI",system-ui,-apple-system,sans-serif;color:var(--fg);background:#fff}
header.top{background:var(--accent);color:#fff;padding:16px 28px 14px}
header.top h1{margin:0 0 4px;font-size:21px;font-weight:700}
header.top .meta{font-size:13px;opacity:.9}
header.top .status{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:700;margin-left:6px;background:#fff;color:var(--accent)}
header.top .status.running{background:#ffe8a3;color:#5c3c00}
header.top .status.interrupted{background:#ffd1cc;color:#7a0b18}
nav.toc{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid var(--line);padding:6px 28px;font-size:13px}
nav.toc a{color:var(--accent);text-decoration:none;margin-right:14px;white-space:nowrap}
nav.toc a.missing-link{color:var(--muted)}
main{max-width:1200px;margin:0 auto;padding:4px 28px 48px}
section{margin-top:26px;padding-top:2px}
h2{font-size:19px;margin:0 0 10px;padding-bottom:4px;border-bottom:2px solid var(--line)}
h3{font-size:15px;margin:18px 0 8px}
p{margin:6px 0 10px;max-width:920px}
code{font:12px/1.4 "DejaVu Sans Mono",monospace;word-break:break-all}
a{color:#0a58a0}
.muted{color:var(--muted)}
.missing{color:var(--muted);font-style:italic;background:var(--soft);padding:8px 12px;border-left:3px solid #c4ccd4;margin:6px 0 12px;max-width:920px}
.chart-missing{flex:1 1 460px;max-width:570px;align-self:flex-start}
.problem,.problems{color:var(--down)}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:8px 0}
.card{border:1px solid var(--line);border-radius:8px;padding:10px 16px;min-width:190px;background:#fff}
.card .label{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.03em}
.card .big{font-size:26px;font-weight:700;font-variant-numeric:tabular-nums}
.card .sub{font-size:12px;color:var(--muted)}
.up{color:var(--up)}.down{color:var(--down)}
span.up,span.down{font-weight:700}
.table-wrap{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:13px;margin:4px 0 6px}
th,td{padding:4px 7px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
thead th{background:var(--soft);font-weight:700;border-bottom:1px solid #c4ccd4}
thead tr:first-child th[colspan]{text-align:center;border-left:1px solid var(--line)}
th.num{text-align:right}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tbody tr:hover td{background:#f3f6f9}
td.best{font-weight:700}
td.up{background:var(--up-bg)}td.down{background:var(--down-bg)}td.same{color:var(--muted)}
table.config td:first-child{white-space:nowrap;color:var(--muted)}
.caption{font-size:12px;color:var(--muted);margin:4px 0 10px;max-width:920px}
.charts{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start;margin:10px 0}
.pair{display:flex;flex-wrap:wrap;gap:20px;align-items:flex-start}
.pair>.table-wrap{flex:0 1 auto}
figure.chart{margin:0;flex:1 1 460px;max-width:570px;border:1px solid var(--line);border-radius:8px;padding:10px 12px 6px;background:#fff}
figure.chart .chart-title{font-weight:700;font-size:14px;margin-bottom:4px}
figure.chart svg{display:block;width:100%;height:auto;font-family:"DejaVu Sans","Segoe UI",system-ui,sans-serif;font-size:12px}
svg .grid line{stroke:#e7ebef;stroke-width:1}
svg .axis line{stroke:#6e7781;stroke-width:1}
svg .tick{fill:#57606a;font-size:11px}
svg .axis-label{fill:#24292f;font-size:12px;font-weight:700}
svg .legend text{fill:#24292f;font-size:12px}
svg .value{fill:#24292f;font-size:10px}
svg .na{fill:#8c959f;font-size:10px;font-style:italic}
svg .marker line{stroke:#8c959f;stroke-dasharray:4 3}
svg .marker text{fill:#57606a;font-size:11px}
svg rect.mark:hover{opacity:.8}
footer{color:var(--muted);font-size:12px;border-top:1px solid var(--line);margin-top:32px;padding-top:8px}
@media print{nav.toc{position:static}figure.chart{break-inside:avoid}}
)css";
}

// An HTML page of sections with a table of contents; `html()` is a complete, self-contained document.
class Page {
 public:
  explicit Page(std::string title, std::string subtitle_html = {}, std::string status = {})
      : title_(std::move(title)), subtitle_(std::move(subtitle_html)), status_(std::move(status)) {}
  Page& add(Section s) {
    sections_.push_back(std::move(s));
    return *this;
  }
  const std::vector<Section>& sections() const { return sections_; }

  std::string html() const {
    std::string h = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                    "<meta name=\"generator\" content=\"taxon report\"><title>" + escape(title_) + "</title><style>" + report_css() +
                    "</style></head><body>\n<header class=\"top\"><h1>" + escape(title_);
    if (!status_.empty()) h += "<span class=\"status " + escape(status_) + "\">" + escape(status_) + "</span>";
    h += "</h1><div class=\"meta\">" + subtitle_ + "</div></header>\n<nav class=\"toc\">";
    for (const auto& s : sections_)
      h += "<a href=\"#" + escape(s.id) + "\"" + (s.recorded ? "" : " class=\"missing-link\"") + ">" + escape(s.title) + "</a>";
    h += "</nav>\n<main>\n";
    for (const auto& s : sections_)
      h += "<section id=\"" + escape(s.id) + "\" data-recorded=\"" + (s.recorded ? "yes" : "no") + "\"><h2>" + escape(s.title) + "</h2>" + s.html + "</section>\n";
    h += "<footer>Written by taxon at " + escape(utc_timestamp()) + " UTC. Self-contained: charts are inline SVG, nothing is loaded "
         "from the network. Hover a bar or point for its value.</footer>\n</main></body></html>\n";
    return h;
  }

 private:
  std::string title_, subtitle_, status_;
  std::vector<Section> sections_;
};

}  // namespace taxon::report
