// The run report: NMI / AMI against sklearn, cluster quality files, SVG charts, and report.html written from
// synthetic run directories (complete, old-style, empty, broken), atomically, with user strings escaped.
// The hidden test "[.report-fixture]" writes the synthetic run the browser test (tests/browser) opens.
#include "taxon/cluster/cluster.hpp"
#include "taxon/eval/eval.hpp"
#include "taxon/report/report.hpp"
#include "taxon/train/callbacks.hpp"

#include <ATen/ATen.h>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "support/temp_dir.hpp"
#include "support/tensor_compare.hpp"

namespace test_report {

namespace fs = std::filesystem;
using taxon::eval::cluster_agreement;

// sklearn 1.2.1 (Debian bookworm) on the labelings below, printed by scripts/report/cluster_agreement_goldens.py:
// name, NMI, AMI, MI, E[MI], H(true), H(pred); AMI and NMI with average_method='arithmetic' (sklearn's default).
struct Golden {
  const char* name;
  double nmi, ami, mi, emi, h_true, h_pred;
};
inline const std::vector<Golden>& goldens() {
  static const std::vector<Golden> g = {
      {"hand", 0.6185727866539659, 0.40577818863462284, 0.7593162887447908, 0.4395860647857365, 1.0888999753452238, 1.366158847569202},
      {"poly300", 0.003216648638392884, -0.02794478835228263, 0.006150917080861823, 0.05796741522523204, 1.3521001522158564, 2.4723256849405266},
      {"pairs60", 0.48829278087554195, 0.2898616283793748, 1.0986122886681102, 0.628681996763051, 1.0986122886681096, 3.4011973816621546},
      {"noisy2000", 0.8452812396049817, 0.8427020077477199, 2.120663400154242, 0.041137483002050695, 2.3424704979334248, 2.6751811446021985},
      {"odd_values", 0.3987478202411471, 0.07271978991886596, 0.4315231086776712, 0.3804956400948588, 1.0821955300387671, 1.0821955300387671},
      {"independent40", 0.0, -0.10209960822142965, 0.0, 0.13876381462459533, 0.6931471805599454, 2.302585092994046},
      {"truth_constant", 0.0, 0.0, 0.0, 0.0, 0.0, 1.0986122886681096},
      {"pred_singletons", 0.6666666666666666, 1.441541926716692e-14, 1.3862943611198904, 1.3862943611198804, 1.3862943611198906, 2.772588722239781},
      {"large20000", 0.7876678930170041, 0.7695864014183034, 3.650022858272894, 0.3636458103426448, 3.672139652038066, 5.595783772623088},
  };
  return g;
}

// The same formulas as the Python script.
inline std::pair<std::vector<int64_t>, std::vector<int64_t>> labelings(const std::string& name) {
  std::vector<int64_t> t, p;
  if (name == "hand") return {{0, 0, 0, 1, 1, 1, 2, 2, 2, 2}, {1, 1, 0, 0, 2, 2, 2, 3, 3, 3}};
  if (name == "odd_values") return {{-7, -7, 1000000, 1000000, 5, 5, 5, -7}, {42, 42, 42, 9, 9, 9, 3, 3}};
  if (name == "poly300")
    for (int64_t i = 0; i < 300; ++i) t.push_back((i * 37 + i * i * 11) % 7), p.push_back((i * i * 13 + i * 5 + 3) % 23);
  if (name == "pairs60")
    for (int64_t i = 0; i < 60; ++i) t.push_back(i % 3), p.push_back((i * 7) % 30);
  if (name == "noisy2000")
    for (int64_t i = 0; i < 2000; ++i) {
      t.push_back((i * i * 7 + i * 3) % 50);
      p.push_back((t.back() * 3 + (i * i * 31 + i * 17) % 5) % 120);
    }
  if (name == "independent40")
    for (int64_t i = 0; i < 40; ++i) t.push_back(i % 2), p.push_back((i / 2) % 10);
  if (name == "truth_constant")
    for (int64_t i = 0; i < 12; ++i) t.push_back(4), p.push_back(i % 3);
  if (name == "pred_singletons")
    for (int64_t i = 0; i < 16; ++i) t.push_back(i % 4), p.push_back(i);
  if (name == "large20000")
    for (int64_t i = 0; i < 20000; ++i) {
      t.push_back((i * i * 7 + i * 3) % 300);
      p.push_back((t.back() * 3 + (i * 31) % 7) % 1000);
    }
  return {t, p};
}

inline std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline int count_of(const std::string& haystack, const std::string& needle) {
  int n = 0;
  for (size_t pos = haystack.find(needle); pos != std::string::npos; pos = haystack.find(needle, pos + 1)) ++n;
  return n;
}

// data-marks of the chart figure with this id (-1 when absent).
inline int chart_marks(const std::string& html, const std::string& id) {
  const std::regex re("<figure class=\"chart\" id=\"" + id + "\" data-marks=\"([0-9]+)\"");
  std::smatch m;
  return std::regex_search(html, m, re) ? std::stoi(m[1].str()) : -1;
}

// The d attribute of the first data path of an SVG.
inline std::string first_path(const std::string& svg) {
  const std::regex re("<path class=\"mark\"[^>]* d=\"([^\"]*)\"");
  std::smatch m;
  return std::regex_search(svg, m, re) ? m[1].str() : std::string();
}

inline std::string section_of(const std::string& html, const std::string& id) {
  const auto start = html.find("<section id=\"" + id + "\"");
  if (start == std::string::npos) return {};
  return html.substr(start, html.find("</section>", start) - start);
}

struct FakeTrainer {
  int64_t step = 0;
  int64_t global_step() const { return step; }
};

// Taxa names carry HTML's special characters on purpose: the report must escape them.
inline const std::vector<std::string>& taxa_names() {
  static const std::vector<std::string> t = {"Fish", "<Birds & Co>", "Insects \"6-legged\""};
  return t;
}

// A run directory as taxon-unicom writes it, made with the library's own writers where the library owns the format.
// `with_new_files` = false leaves out what older versions did not record (timings, cluster quality, "round").
inline void write_synthetic_run(const fs::path& dir, bool with_new_files = true) {
  fs::create_directories(dir);
  const int rounds = 2;
  nlohmann::json config = {{"dataset", "csv"}, {"model", "demo28"}, {"cluster_ratio", 0.1}, {"rounds", rounds},
                           {"epochs", 2}, {"labels_from", ""}, {"ranks", {"species=scientificName", "genus=@genus(scientificName)"}},
                           {"images", "/data/<photos> & more"}, {"lr", 0.001}};
  taxon::io::write_text_atomically(dir / "config.json", config.dump(2));

  // Two rounds of 40 steps logged every 2; one NaN loss (an fp16 overflow) in round 1.
  for (int r = 0; r < rounds; ++r) {
    nlohmann::json context = nlohmann::json::object();
    if (with_new_files) context["round"] = r;
    taxon::train::MetricsLog log(dir / "metrics.jsonl", 2, context);
    FakeTrainer t;
    // Versions before "round" was recorded did not rewrite the log when a run started at step 0 (a new round).
    if (with_new_files || r == 0) log.on_train_begin(t);
    for (int64_t s = 1; s <= 40; ++s) {
      taxon::train::StepReport rep;
      rep.epoch = (s - 1) / 20;
      rep.step = s;
      rep.total_steps = 40;
      rep.loss = (r == 1 && s == 10) ? std::nan("") : 20.0 * std::exp(-0.05 * s) + 3.0 - r;
      rep.lr = 1e-3 * std::sin(3.14159 * s / 41.0) + 1e-6;
      rep.head_lr = 10 * rep.lr;
      rep.images = 64;
      rep.seconds = 0.5 + 0.01 * (s % 5);
      rep.grad_norm = 4.0 / (1 + 0.1 * s);
      log.on_step_end(t, rep);
    }
  }

  // Pseudo-labels of 600 images into 60 clusters of uneven sizes, against species (30) and genus (6) labels.
  const int64_t n = 600;
  std::vector<int64_t> species(n), genus(n);
  for (int64_t i = 0; i < n; ++i) species[i] = (i * 7) % 30, genus[i] = species[i] / 5;
  species[5] = -1;  // an image with no species label
  for (int r = 0; r < rounds; ++r) {
    const fs::path rd = dir / ("round-" + std::to_string(r));
    std::vector<int64_t> labels(n);
    for (int64_t i = 0; i < n; ++i) labels[i] = (r == 0 ? (i * i) % 60 : (species[i] < 0 ? 0 : species[i]) * 2 + (i % 97 == 0));
    taxon::cluster::KMeansResult km;
    km.labels = at::tensor(labels, at::kLong);
    km.centroids = at::zeros({60, 4});
    taxon::cluster::save_clustering(rd, km);
    if (with_new_files)
      taxon::cluster::save_cluster_quality(rd, taxon::cluster::measure_cluster_quality(km.labels, {{"species", species}, {"genus", genus}}));
    taxon::io::write_text_atomically(rd / "done", "ok\n");
  }

  // The seeds' table: raw pixels, before and after, for All and every taxa group at two ranks.
  taxon::eval::TaxonomyTable table;
  const std::vector<std::string> models = {"raw-pixels", "before", "after"};
  for (size_t m = 0; m < models.size(); ++m) {
    std::vector<std::string> groups = taxa_names();
    groups.insert(groups.begin(), "All");
    for (size_t g = 0; g < groups.size(); ++g)
      for (const std::string rank : {"species", "genus"}) {
        taxon::eval::TaxonomyRow row;
        row.model = models[m], row.taxa = groups[g], row.column = rank;
        const double base = 0.45 + 0.05 * static_cast<double>(g) + (rank == "genus" ? 0.1 : 0.0);
        const double shift = m == 0 ? 0.05 : m == 1 ? 0.0 : (g == 2 ? -0.03 : 0.2);  // "after" worse on one group
        row.accuracy_individual = base + shift;
        row.accuracy_avg = base + shift - 0.02;
        row.distance_individual = base + shift - 0.01;
        row.distance_avg = (m == 2 && g == 3 && rank == "genus") ? std::nan("") : base + shift - 0.03;
        table.rows.push_back(row);
      }
  }
  table.write_csv(dir / "eval_table.csv");

  nlohmann::json retrieval = {
      {"raw-pixels", {{"rank", "species"}, {"recall_at_1", 0.52}, {"recall_at_5", nullptr}, {"map_at_r", 0.21}, {"r_precision", 0.3}}},
      {"before", {{"rank", "species"}, {"recall_at_1", 0.48}, {"recall_at_5", 0.7}, {"map_at_r", 0.18}, {"r_precision", 0.27}}},
      {"after", {{"rank", "species"}, {"recall_at_1", 0.66}, {"recall_at_5", 0.86}, {"map_at_r", 0.37}, {"r_precision", 0.44}}}};
  taxon::io::write_text_atomically(dir / "retrieval.json", retrieval.dump(2));

  taxon::io::write_text_atomically(dir / "zero_shot.csv",
                                   "model,prompts,taxa,column,top1,top5,num_queries,num_classes\n"
                                   "before,clip,All,species,12.00%,30.50%,120,30\nbefore,clip,All,genus,35.00%,80.00%,120,6\n"
                                   "after,clip,All,species,14.50%,33.00%,120,30\nafter,clip,All,genus,33.00%,81.00%,120,6\n");
  if (with_new_files) {
    taxon::report::StageTimings t;
    t.status = "finished";
    t.stages = {{"load data and model", 1.5, 0, "2024-01-01T00:00:01Z"},      {"baseline evaluation", 12.25, 0, "2024-01-01T00:00:13Z"},
                {"round 0: clustering", 3.0, 0, "2024-01-01T00:00:16Z"},       {"round 0: training", 95.0, 0, "2024-01-01T00:01:51Z"},
                {"round 1: clustering", 3.2, 0, "2024-01-01T00:01:54Z"},       {"round 1: training", 40.0, 0, "2024-01-01T00:02:34Z"},
                {"round 1: training", 52.0, 1, "2024-01-01T01:00:00Z"},        {"final evaluation", 11.0, 1, "2024-01-01T01:00:11Z"}};
    t.save(dir);
  }
}

// The test cases live in the namespace too: a file-scope `using namespace` would leak these helpers into the
// other files of the unity build (test_text.cpp has its own goldens()).

TEST_CASE("NMI and AMI match sklearn, including the expected mutual information", "[report][eval][cluster-agreement]") {
  for (const auto& g : goldens()) {
    INFO(g.name);
    const auto [t, p] = labelings(g.name);
    const auto a = cluster_agreement(t, p);
    CHECK(a.nmi == Approx(g.nmi).margin(1e-12).epsilon(1e-10));
    CHECK(a.ami == Approx(g.ami).margin(1e-10).epsilon(1e-9));
    CHECK(a.mutual_information == Approx(g.mi).margin(1e-12).epsilon(1e-10));
    CHECK(a.expected_mutual_information == Approx(g.emi).margin(1e-12).epsilon(1e-9));
    CHECK(a.entropy_true == Approx(g.h_true).margin(1e-12).epsilon(1e-10));
    CHECK(a.entropy_pred == Approx(g.h_pred).margin(1e-12).epsilon(1e-10));
    CHECK(taxon::eval::normalized_mutual_information(t, p) == Approx(g.nmi).margin(1e-12));
    CHECK(taxon::eval::adjusted_mutual_information(t, p) == Approx(g.ami).margin(1e-10));
  }
}

TEST_CASE("cluster agreement: relabelling, perfect matches, purity and bad input", "[report][eval][cluster-agreement]") {
  const auto [t, p] = labelings("noisy2000");
  std::vector<int64_t> renamed(p.size()), swapped_t(t.size());
  for (size_t i = 0; i < p.size(); ++i) renamed[i] = 1000 - 3 * p[i], swapped_t[i] = t[i] * 11 + 5;
  const auto a = cluster_agreement(t, p), b = cluster_agreement(swapped_t, renamed);
  CHECK(b.nmi == Approx(a.nmi).epsilon(1e-12));
  CHECK(b.ami == Approx(a.ami).epsilon(1e-12));
  CHECK(cluster_agreement(p, t).ami == Approx(a.ami).epsilon(1e-12));  // symmetric with the arithmetic mean

  const auto same = cluster_agreement(t, swapped_t);
  CHECK(same.nmi == Approx(1.0).epsilon(1e-12));
  CHECK(same.ami == Approx(1.0).epsilon(1e-9));
  CHECK(same.purity == 1.0);
  const auto constant = cluster_agreement({3, 3, 3}, {8, 8, 8});  // neither splits the data: sklearn says 1
  CHECK(constant.nmi == 1.0);
  CHECK(constant.ami == 1.0);

  const auto [ht, hp] = labelings("hand");
  CHECK(cluster_agreement(ht, hp).purity == Approx(0.8));  // majorities 1 + 2 + 2 + 3 of 10
  CHECK(cluster_agreement(ht, hp).classes == 3);
  CHECK(cluster_agreement(ht, hp).clusters == 4);

  // Too many hypergeometric terms: E[MI] and AMI are NaN, NMI and purity are still computed.
  const auto capped = cluster_agreement(t, p, taxon::eval::ExpectedMutualInformationOptions().max_terms(10));
  CHECK(std::isnan(capped.ami));
  CHECK(std::isnan(capped.expected_mutual_information));
  CHECK(capped.nmi == Approx(a.nmi));

  REQUIRE_TAXON_ERROR(cluster_agreement({1, 2}, {1}), "eval.label-mismatch");
  REQUIRE_TAXON_ERROR(cluster_agreement({}, {}), "eval.empty-input");
}

TEST_CASE("cluster quality leaves unlabelled images out and round-trips through its JSON file", "[report][cluster]") {
  taxon::test::TempDir dir("report_quality");
  const std::vector<int64_t> pseudo = {0, 0, 1, 1, 2, 2, 2, 0};
  const std::vector<int64_t> species = {5, 5, -1, 7, 7, 7, 9, -1}, genus = {1, 1, 1, 1, 2, 2, 2, 1};
  const auto q = taxon::cluster::measure_cluster_quality(at::tensor(pseudo, at::kLong), {{"species", species}, {"genus", genus}, {"none", std::vector<int64_t>(8, -1)}});
  CHECK(q.images == 8);
  CHECK(q.clusters == 3);
  REQUIRE(q.ranks.size() == 2);  // "none" has no labels at all
  CHECK(q.ranks[0].rank == "species");
  CHECK(q.ranks[0].unlabeled == 2);
  CHECK(q.ranks[0].agreement.items == 6);
  const auto direct = cluster_agreement({5, 5, 7, 7, 7, 9}, {0, 0, 1, 2, 2, 2});
  CHECK(q.ranks[0].agreement.nmi == Approx(direct.nmi));
  CHECK(q.ranks[0].agreement.ami == Approx(direct.ami));

  auto with_nan = q;
  with_nan.ranks[1].agreement.ami = std::nan("");
  taxon::cluster::save_cluster_quality(dir.path, with_nan);
  const auto back = taxon::cluster::load_cluster_quality(dir.path);
  REQUIRE(back.ranks.size() == 2);
  CHECK(back.clusters == 3);
  CHECK(back.ranks[0].agreement.nmi == Approx(q.ranks[0].agreement.nmi));
  CHECK(back.ranks[0].unlabeled == 2);
  CHECK(std::isnan(back.ranks[1].agreement.ami));
  CHECK(back.ranks[1].agreement.purity == Approx(q.ranks[1].agreement.purity));

  taxon::io::write_text_atomically(dir / "cluster_quality.json", "{\"ranks\": [{\"nmi\": 1}]}");
  REQUIRE_TAXON_ERROR(taxon::cluster::load_cluster_quality(dir.path), "cluster.bad-quality-file");
  REQUIRE_TAXON_ERROR(taxon::cluster::measure_cluster_quality(at::tensor(pseudo, at::kLong), {{"species", {1, 2}}}), "cluster.bad-labels");
}

TEST_CASE("MetricsLog context tags every line and a resume truncates only lines of its own round", "[report][train][callbacks]") {
  taxon::test::TempDir dir("report_metrics_context");
  const auto path = dir / "metrics.jsonl";
  const auto run_round = [&](int round, int64_t from_step, int64_t to_step) {
    taxon::train::MetricsLog log(path, 1, {{"round", round}});
    FakeTrainer t{from_step};
    log.on_train_begin(t);
    for (int64_t s = from_step + 1; s <= to_step; ++s) {
      taxon::train::StepReport r;
      r.step = s, r.total_steps = to_step, r.loss = 1.0;
      log.on_step_end(t, r);
    }
  };
  run_round(0, 0, 6);
  run_round(1, 0, 4);  // killed at step 4, checkpoint at step 2
  run_round(1, 2, 5);  // resumed: round 1's steps 3-4 are dropped and re-logged, round 0's 3-6 stay
  std::vector<std::pair<int, int64_t>> lines;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    lines.emplace_back(j.at("round").get<int>(), j.at("step").get<int64_t>());
  }
  CHECK(lines == std::vector<std::pair<int, int64_t>>{{0, 1}, {0, 2}, {0, 3}, {0, 4}, {0, 5}, {0, 6}, {1, 1}, {1, 2}, {1, 3}, {1, 4}, {1, 5}});
  REQUIRE_TAXON_ERROR(taxon::train::MetricsLog(path, 1, nlohmann::json::array()), "train.bad-option");
}

TEST_CASE("report html helpers escape user strings and print NaN as n/a", "[report][html]") {
  using namespace taxon::report;
  CHECK(escape("<b>Fish & \"Co\" 'x'</b>") == "&lt;b&gt;Fish &amp; &quot;Co&quot; &#39;x&#39;&lt;/b&gt;");
  CHECK(percent(0.71254) == "71.25%");
  CHECK(percent(std::nan("")) == "n/a");
  CHECK(fixed(std::numeric_limits<double>::infinity()) == "n/a");
  CHECK(number(0.000123456) == "0.0001235");
  CHECK(count(1234567) == "1\u2009234\u2009567");
  CHECK(duration(185) == "3 min 05 s");
  CHECK(parse_percent("12.50%").value() == Approx(0.125));
  CHECK(std::isnan(parse_percent("nan%").value()));
  CHECK_FALSE(parse_percent("12.5").has_value());
  CHECK_FALSE(parse_percent("Fish%").has_value());
  CHECK(delta_cell(0.0325).css_class == "up");
  CHECK(delta_cell(0.0325).html.find("+3.25") != std::string::npos);
  CHECK(delta_cell(-0.015).css_class == "down");
  CHECK(delta_cell(0.0).css_class == "same");
}

TEST_CASE("SVG charts: nice ticks, NaN gaps, n/a bars, escaped labels, marks counted", "[report][chart]") {
  using namespace taxon::report;
  const auto t = chart_detail::nice_ticks(0, 0.93);
  CHECK(t.lo == 0);
  CHECK(t.hi == Approx(1.0));
  CHECK(t.step == Approx(0.2));
  CHECK(chart_detail::nice_ticks(3, 3).values.size() >= 2);  // a flat series still gets an axis
  CHECK(chart_detail::tick_label(2e-4, 1e-4, false) == "2e-4");
  CHECK(chart_detail::tick_label(0.25, 0.25, true) == "25%");
  CHECK(chart_detail::tick_label(7.5, 2.5, false) == "7.5");

  LineChart line;
  line.id = "l";
  line.title = "t";
  line.x.label = "step";
  line.y.label = "loss";
  line.series = {{"loss <a>", palette::blue, {1, 2, 3, 4, 5}, {1.0, std::nan(""), 2.0, 3.0, 2.5}}};
  const auto lr = render(line);
  CHECK(lr.marks == 1);
  CHECK(count_of(first_path(lr.svg), "M") == 2);  // the NaN splits the path into two runs
  CHECK(count_of(first_path(lr.svg), "L") == 2);
  CHECK(lr.svg.find("loss &lt;a&gt;") != std::string::npos);
  CHECK(lr.svg.find("<a>") == std::string::npos);
  CHECK(count_of(lr.svg, "class=\"axis-label\"") == 2);
  CHECK(lr.svg.find("class=\"legend\"") != std::string::npos);

  LineChart single = line;  // one logged step: no line to draw, the dot is the mark
  single.series[0].y = {std::nan(""), std::nan(""), 2.0, std::nan(""), std::nan("")};
  const auto sr = render(single);
  CHECK(sr.marks == 1);
  CHECK(first_path(sr.svg).empty());
  CHECK(count_of(sr.svg, "class=\"point mark\"") == 1);

  LineChart empty = line;
  empty.series[0].y = {std::nan(""), std::nan(""), std::nan(""), std::nan(""), std::nan("")};
  CHECK(render(empty).marks == 0);

  LineChart long_line = line;
  long_line.max_points = 50;
  long_line.series[0].x.resize(1000);
  long_line.series[0].y.resize(1000);
  for (int i = 0; i < 1000; ++i) long_line.series[0].x[i] = i, long_line.series[0].y[i] = i % 7;
  const auto ll = render(long_line);
  CHECK(count_of(first_path(ll.svg), "L") == 49);  // 50 averaged points, not 1000

  BarChart bars;
  bars.id = "b";
  bars.title = "acc";
  bars.categories = {"species", "<genus>"};
  bars.value_axis = {"accuracy (%)", true, 0.0, 1.0};
  bars.category_axis.label = "rank";
  bars.series = {{"before", palette::orange, {0.5, std::nan("")}}, {"after", palette::blue, {0.7, 0.8}}};
  const auto br = render(bars);
  CHECK(br.marks == 3);
  CHECK(br.svg.find(">n/a<") != std::string::npos);
  CHECK(br.svg.find("&lt;genus&gt;") != std::string::npos);
  CHECK(br.svg.find("100%") != std::string::npos);
  bars.horizontal = true;
  CHECK(render(bars).marks == 3);
  CHECK(figure(bars).find("data-marks=\"3\"") != std::string::npos);
}

TEST_CASE("report.html of a complete run: every section, chart and escaped name", "[report]") {
  taxon::test::TempDir dir("report_full");
  write_synthetic_run(dir.path);
  const auto out = taxon::report::write_run_report(dir.path);
  CHECK(out == dir.path / "report.html");
  const std::string html = slurp(out);

  for (const char* id : {"accuracy-per-rank", "accuracy-per-group", "retrieval-chart", "training-loss", "training-lr",
                         "training-grad-norm", "training-throughput", "cluster-sizes", "cluster-purity", "zero-shot-chart", "stage-timing"}) {
    INFO(id);
    CHECK(chart_marks(html, id) > 0);
  }
  CHECK(chart_marks(html, "accuracy-per-rank") == 6);   // 2 ranks x 3 models
  CHECK(chart_marks(html, "accuracy-per-group") == 9);  // 3 groups x 3 models
  CHECK(chart_marks(html, "retrieval-chart") == 11);    // 4 metrics x 3 models, raw pixels' Recall@5 is null
  CHECK(chart_marks(html, "cluster-purity") == 12);     // 2 rounds x 2 ranks x (NMI, AMI, purity)
  CHECK(chart_marks(html, "stage-timing") == 8);
  CHECK(html.find("Not recorded") == std::string::npos);
  CHECK(html.find("data-recorded=\"no\"") == std::string::npos);
  CHECK(html.find("class=\"status finished\"") != std::string::npos);

  // User strings are escaped wherever they appear; nothing is loaded from anywhere.
  CHECK(html.find("&lt;Birds &amp; Co&gt;") != std::string::npos);
  CHECK(html.find("<Birds") == std::string::npos);
  CHECK(html.find("Insects &quot;6-legged&quot;") != std::string::npos);
  CHECK(html.find("/data/&lt;photos&gt; &amp; more") != std::string::npos);
  CHECK(html.find("<script") == std::string::npos);
  CHECK(html.find("<link") == std::string::npos);
  CHECK(html.find(" src=") == std::string::npos);
  CHECK(count_of(html, "http") == count_of(html, "http://www.w3.org/2000/svg"));

  // The seeds' table: after - before for All/species is +20 pp (up), the "<Birds & Co>" group went down 3 pp,
  // a NaN cell prints n/a; raw pixels' missing Recall@5 too.
  const std::string eval = section_of(html, "evaluation");
  CHECK(eval.find("class=\"num up\" title=\"change in percentage points\">\u25b2 +20.00") != std::string::npos);
  CHECK(eval.find("class=\"num down\" title=\"change in percentage points\">\u25bc -3.00") != std::string::npos);
  CHECK(eval.find(">n/a<") != std::string::npos);
  CHECK(section_of(html, "retrieval").find(">n/a<") != std::string::npos);
  CHECK(section_of(html, "retrieval").find("66.00%") != std::string::npos);

  // Training: two rounds from the "round" field; the resumed stage is shown as such.
  CHECK(section_of(html, "training").find(">round 1<") != std::string::npos);
  CHECK(section_of(html, "timing").find("round 1: training (resume 1)") != std::string::npos);
  CHECK(section_of(html, "clusters").find("AMI") != std::string::npos);
  CHECK(section_of(html, "files").find("href=\"round-0/\"") != std::string::npos);
}

TEST_CASE("report.html of an old run, an empty directory and broken files degrades to 'not recorded'", "[report]") {
  taxon::test::TempDir dir("report_degrade");
  write_synthetic_run(dir / "old", /*with_new_files=*/false);
  const std::string old_html = slurp(taxon::report::write_run_report(dir / "old"));
  CHECK(section_of(old_html, "timing").find("Not recorded in this run") != std::string::npos);
  CHECK(section_of(old_html, "timing").find("logged training steps alone took") != std::string::npos);
  CHECK(section_of(old_html, "clusters").find("Not recorded in this run") != std::string::npos);  // purity
  CHECK(section_of(old_html, "clusters").find("--resume") != std::string::npos);  // and how to get it
  CHECK(chart_marks(old_html, "cluster-sizes") > 0);  // sizes come from labels.npy
  CHECK(section_of(old_html, "training").find(">round 1<") != std::string::npos);  // inferred from the step reset
  CHECK(old_html.find("class=\"status finished\"") != std::string::npos);  // retrieval.json has "after"

  fs::create_directories(dir / "empty");
  const std::string empty_html = slurp(taxon::report::write_run_report(dir / "empty"));
  for (const char* id : {"evaluation", "retrieval", "training", "clusters", "zero-shot", "timing", "config"}) {
    INFO(id);
    CHECK(empty_html.find(std::string("<section id=\"") + id + "\" data-recorded=\"no\"") != std::string::npos);
  }
  CHECK(count_of(empty_html, "<figure") == 0);
  CHECK(empty_html.find("class=\"status incomplete\"") != std::string::npos);
  REQUIRE_TAXON_ERROR(taxon::report::write_run_report(dir / "no-such-run"), "report.missing-run-dir");

  write_synthetic_run(dir / "broken");
  taxon::io::write_text_atomically(dir / "broken" / "retrieval.json", "{\"after\": ");
  taxon::io::write_text_atomically(dir / "broken" / "round-1" / "labels.npy", "not numpy");
  taxon::io::write_text_atomically(dir / "broken" / "timings.json", "[1, 2]");
  const std::string broken = slurp(taxon::report::write_run_report(dir / "broken"));
  const std::string problems = section_of(broken, "problems");
  CHECK(problems.find("retrieval.json") != std::string::npos);
  CHECK(problems.find("report.bad-run-file") != std::string::npos);  // the id tells the reader what to look up
  CHECK(problems.find("round-1/labels.npy") != std::string::npos);
  CHECK(problems.find("report.bad-timings") != std::string::npos);
  CHECK(chart_marks(broken, "training-loss") > 0);  // the rest still renders
  CHECK(chart_marks(broken, "cluster-sizes") > 0);  // round 0's sizes
}

TEST_CASE("skipped images: how many and which in the report, none in one line, the file read by its owner", "[report][data]") {
  taxon::test::TempDir dir("report_skipped");
  write_synthetic_run(dir / "run");
  // The complete run has no skipped_images.json: one line, not an empty table.
  const std::string none = section_of(slurp(taxon::report::write_run_report(dir / "run")), "skipped");
  CHECK(none.find("No images skipped") != std::string::npos);
  CHECK(none.find("<table") == std::string::npos);

  taxon::data::SkippedImages skipped;
  skipped.images = {{"train", 3, "/photos/<odd> & co/img003.png", "embed train", "[taxon.data.corrupt-image] img003.png: cannot decode PNG"},
                    {"train", 17, "/photos/img017.jpg", "pixel features", "[taxon.data.corrupt-image] img017.jpg: empty file (0 bytes)"},
                    {"eval", 4, "", "embed eval", "[taxon.data.corrupt-image] sample 4"}};
  skipped.save(dir / "run");
  const auto back = taxon::data::SkippedImages::load(dir / "run");
  REQUIRE(back.images.size() == 3);
  CHECK(back.count("train") == 2);
  CHECK(back.count("eval") == 1);
  CHECK(back.images[1].file == "/photos/img017.jpg");
  CHECK(back.images[1].stage == "pixel features");
  CHECK(back.images[2].error == "[taxon.data.corrupt-image] sample 4");

  const std::string html = slurp(taxon::report::write_run_report(dir / "run"));
  const std::string section = section_of(html, "skipped");
  CHECK(section.find("data-recorded=\"yes\"") != std::string::npos);
  CHECK(section.find("<b>3</b> unreadable images skipped (2 training, 1 evaluation)") != std::string::npos);
  CHECK(count_of(section, "<tr>") == 4);  // header + 3 images
  CHECK(section.find("/photos/&lt;odd&gt; &amp; co/img003.png") != std::string::npos);
  CHECK(section.find("<odd>") == std::string::npos);
  CHECK(section.find("empty file (0 bytes)") != std::string::npos);
  CHECK(section.find(">pixel features<") != std::string::npos);
  CHECK(section.find(">17<") != std::string::npos);
  CHECK(taxon::report::skipped_section(taxon::report::read_run(dir / "run"), 2).html.find("1 more are not shown") != std::string::npos);

  // Runs made before "file" and "stage" were recorded; a damaged record is listed as a problem, the rest renders.
  taxon::io::write_text_atomically(dir / "run" / taxon::data::SkippedImages::kFileName,
                                   R"({"train": [{"row": 5, "error": "cannot decode"}]})");
  const auto old = taxon::report::read_run(dir / "run");
  REQUIRE(old.skipped.images.size() == 1);
  CHECK(old.skipped.images[0].file.empty());
  CHECK(taxon::report::skipped_section(old).html.find(">n/a<") != std::string::npos);
  taxon::io::write_text_atomically(dir / "run" / taxon::data::SkippedImages::kFileName, R"({"eval": [{"row": -1}]})");
  REQUIRE_TAXON_ERROR(taxon::data::SkippedImages::load(dir / "run"), "data.bad-skipped-file");
  const std::string damaged = slurp(taxon::report::write_run_report(dir / "run"));
  CHECK(section_of(damaged, "problems").find("skipped_images.json") != std::string::npos);
  CHECK(section_of(damaged, "problems").find("data.bad-skipped-file") != std::string::npos);
  taxon::io::write_text_atomically(dir / "run" / taxon::data::SkippedImages::kFileName, "[1, 2]");
  REQUIRE_TAXON_ERROR(taxon::data::SkippedImages::load(dir / "run"), "data.bad-skipped-file");
}

TEST_CASE("report inputs that are not what they should be raise their ids", "[report][io]") {
  taxon::test::TempDir dir("report_bad_input");
  write_synthetic_run(dir.path);
  taxon::io::write_text_atomically(dir / "timings.json", "{\"stages\": [{\"stage\": \"x\"}]}");
  REQUIRE_TAXON_ERROR(taxon::report::StageTimings::load(dir.path), "report.bad-timings");  // no seconds
  taxon::io::write_text_atomically(dir / "timings.json", "not json");
  REQUIRE_TAXON_ERROR(taxon::report::StageTimings::load(dir.path), "report.bad-timings");

  // An output whose parent is a file cannot be written; the report already there stays whole.
  const auto path = taxon::report::write_run_report(dir.path);
  const std::string before = slurp(path);
  REQUIRE_TAXON_ERROR(taxon::report::write_run_report(dir.path, taxon::report::ReportOptions().output(dir / "config.json" / "r.html")),
                      "io.cannot-write");
  CHECK(slurp(path) == before);

  // A recorder whose report cannot be written logs it and lets the run go on.
  taxon::report::RunRecorder recorder(dir.path, "load data", taxon::report::ReportOptions().output(dir / "config.json" / "r.html"));
  CHECK_NOTHROW(recorder.begin("baseline evaluation"));
  CHECK_NOTHROW(recorder.end("finished"));
  CHECK(taxon::report::StageTimings::load(dir.path).stages.size() == 2);  // the damaged timings.json was replaced
}

TEST_CASE("report.html is replaced atomically: a reader of the old file keeps a whole old file", "[report][io]") {
  taxon::test::TempDir dir("report_atomic");
  write_synthetic_run(dir.path);
  const auto path = taxon::report::write_run_report(dir.path);
  const std::string before = slurp(path);
  std::ifstream old_reader(path, std::ios::binary);  // holds the old inode open
  taxon::io::write_text_atomically(dir / "config.json", nlohmann::json{{"model", "changed-model-name"}}.dump());
  taxon::report::write_run_report(dir.path);
  const std::string old_view(std::istreambuf_iterator<char>(old_reader), {});
  CHECK(old_view == before);  // written in place, the open reader would see the new or a truncated file
  CHECK(slurp(path).find("changed-model-name") != std::string::npos);
  for (const auto& e : fs::directory_iterator(dir.path)) CHECK(e.path().filename().string().find(".tmp.") == std::string::npos);

  const auto elsewhere = dir / "out" / "copy.html";
  CHECK(taxon::report::write_run_report(dir.path, taxon::report::ReportOptions().output(elsewhere).title("My <run>")) == elsewhere);
  const std::string copy = slurp(elsewhere);
  CHECK(copy.find("<title>My &lt;run&gt;</title>") != std::string::npos);
  CHECK(copy.find("href=\"../round-0/\"") != std::string::npos);  // links stay relative to where the report is
}

TEST_CASE("RunRecorder times stages across a resume and keeps the report current", "[report]") {
  taxon::test::TempDir dir("report_recorder");
  {
    taxon::report::RunRecorder rec(dir.path, "load data");
    CHECK(taxon::report::StageTimings::load(dir.path).status == "running");
    rec.begin("baseline evaluation");
    CHECK(fs::exists(dir / "report.html"));
    CHECK(slurp(dir / "report.html").find("last finished stage: load data") != std::string::npos);
    rec.begin("round 0: training");
    rec.end("interrupted");
  }
  auto t = taxon::report::StageTimings::load(dir.path);
  REQUIRE(t.stages.size() == 3);
  CHECK(t.status == "interrupted");
  CHECK(t.stages[0].stage == "load data");
  CHECK(t.stages[2].session == 0);
  CHECK(t.stages[0].seconds >= 0);
  CHECK(t.stages[0].finished_at.size() == 20);
  {
    taxon::report::RunRecorder rec(dir.path, "round 0: training");  // --resume
    rec.end("finished");
  }
  t = taxon::report::StageTimings::load(dir.path);
  REQUIRE(t.stages.size() == 4);
  CHECK(t.stages[3].session == 1);
  CHECK(t.status == "finished");
  const std::string html = slurp(dir / "report.html");
  CHECK(html.find("round 0: training (resume 1)") != std::string::npos);
  CHECK(chart_marks(html, "stage-timing") == 4);
}

TEST_CASE("runs compared side by side: one row per run, deltas against the first", "[report]") {
  taxon::test::TempDir dir("report_compare");
  std::vector<fs::path> dirs;
  std::vector<taxon::report::RunRecord> runs;
  for (const double ratio : {0.1, 0.01, 0.001}) {
    const fs::path d = dir / ("ratio-" + taxon::report::number(ratio));
    write_synthetic_run(d, false);
    nlohmann::json r = {{"after", {{"recall_at_1", 0.5 + ratio}, {"recall_at_5", 0.8}, {"map_at_r", 0.3 - ratio}, {"r_precision", 0.4}}}};
    taxon::io::write_text_atomically(d / "retrieval.json", r.dump());
    dirs.push_back(d);
    runs.push_back(taxon::report::read_run(d));
  }
  const auto c = taxon::report::compare_runs(runs);
  REQUIRE(c.rows.size() == 3);
  CHECK(c.rows[1].name == "ratio-0.01");
  CHECK(c.rows[2].values[0] == Approx(0.501));
  CHECK(c.reference_row == 0);
  const std::string html = taxon::report::comparison_html(c);
  CHECK(chart_marks(html, "runs-chart") == 12);
  CHECK(html.find("\u25bc -9.00") != std::string::npos);  // Recall@1 of ratio 0.01 vs 0.1

  const auto page = taxon::report::write_comparison_report(dirs, dir / "sweep.html", "cluster-ratio sweep");
  const std::string sweep = slurp(page);
  CHECK(chart_marks(sweep, "runs-chart") == 12);
  CHECK(sweep.find("href=\"ratio-0.001/report.html\"") != std::string::npos);
}

TEST_CASE("a sweep's directory: values from config.json, sweep.csv and the sweep chart, unfinished values shown", "[report]") {
  using taxon::report::SweepParameter;
  CHECK(taxon::report::sweep_value_text(0.1) == "0.1");
  CHECK(taxon::report::sweep_value_text(0.001) == "0.001");
  CHECK(taxon::report::sweep_value_text(1e-5) == "1e-05");
  CHECK(taxon::report::sweep_dir_name(SweepParameter::clusters, 500) == "clusters-500");
  CHECK(taxon::report::sweep_dir_name(SweepParameter::cluster_ratio, 0.01) == "ratio-0.01");

  taxon::test::TempDir dir("report_sweep");
  const fs::path sweep_dir = dir / "sweep";
  fs::create_directories(sweep_dir);
  taxon::io::write_text_atomically(sweep_dir / "config.json", nlohmann::json{{"cluster_ratio_sweep", {0.1, 0.01, 0.001}}}.dump());
  // An ordinary run (one value, or none) is no sweep.
  taxon::io::write_text_atomically(dir / "config.json", nlohmann::json{{"cluster_ratio_sweep", {0.1}}}.dump());
  CHECK_FALSE(taxon::report::sweep_of(taxon::report::read_run(dir.path)).has_value());

  const auto sweep = taxon::report::sweep_of(taxon::report::read_run(sweep_dir));
  REQUIRE(sweep.has_value());
  REQUIRE(sweep->points.size() == 3);
  CHECK(sweep->parameter == SweepParameter::cluster_ratio);
  CHECK(sweep->points[2].dir == sweep_dir / "ratio-0.001");
  // Two values finished (with their own pseudo-class counts), the last one not started.
  for (int i = 0; i < 2; ++i) {
    const fs::path d = sweep->points[static_cast<size_t>(i)].dir;
    write_synthetic_run(d);
    taxon::cluster::KMeansResult km;
    km.labels = at::arange(i == 0 ? 60 : 6, at::kLong).repeat({10});
    km.centroids = at::zeros({i == 0 ? 60 : 6, 4});
    taxon::cluster::save_clustering(d / "round-0", km);
    nlohmann::json r = {{"before", {{"recall_at_1", 0.4}, {"map_at_r", 0.1}}},
                        {"after", {{"recall_at_1", 0.6 - 0.1 * i}, {"recall_at_5", 0.8}, {"map_at_r", 0.3}, {"r_precision", 0.35},
                                   {"accuracy_individual_all", 0.55}}}};
    taxon::io::write_text_atomically(d / "retrieval.json", r.dump());
  }
  const auto written = taxon::report::write_sweep_report(sweep_dir, *sweep);
  REQUIRE(written.rows.size() == 3);
  CHECK(written.rows[0].pseudo_classes == 60);
  CHECK(written.rows[1].pseudo_classes == 6);
  CHECK_FALSE(written.rows[2].finished);
  CHECK(slurp(written.csv) ==
        "cluster_ratio,run,pseudo_classes,finished,recall_at_1,recall_at_5,map_at_r,r_precision,accuracy_individual,"
        "before_recall_at_1,before_map_at_r\n"
        "0.1,ratio-0.1,60,yes,0.600000,0.800000,0.300000,0.350000,0.550000,0.400000,0.100000\n"
        "0.01,ratio-0.01,6,yes,0.500000,0.800000,0.300000,0.350000,0.550000,0.400000,0.100000\n"
        "0.001,ratio-0.001,,no,,,,,,,\n");
  const std::string html = slurp(written.report);
  CHECK(chart_marks(html, "sweep-chart") == 4);  // Recall@1 and MAP@R of the two finished values
  CHECK(count_of(html, "<title>Recall@1 \u00b7 ratio 0.1 (k=60): 60.0%</title>") == 1);
  CHECK(count_of(section_of(html, "sweep"), "n/a") == 2);  // the unfinished value's two bars
  // The comparison: the starting point as reference, then the values with their deltas.
  CHECK(chart_marks(html, "sweep-comparison-chart") == 10);  // before: 2 recorded metrics; each finished value: 4
  CHECK(html.find("\u25b2 +20.00") != std::string::npos);  // Recall@1 0.6 vs 0.4
  CHECK(html.find("href=\"ratio-0.001/report.html\"") != std::string::npos);
  CHECK(html.find("2 of 3 values finished") != std::string::npos);
}

// Not run by default ("[.]"): ctest's report.synthetic_fixture runs it to give the browser test a run directory
// with every section, escaped names and NaN values.
TEST_CASE("the retrieval section says which Recall@K definition its numbers use", "[report]") {
  taxon::report::RunRecord run;
  run.retrieval = {{"after", {{"rank", "species"}, {"recall_at_1", 0.5}, {"recall_definition", "unicom"}}}};
  CHECK(taxon::report::retrieval_comparison(run).caption.find("UNICOM's definition") != std::string::npos);
  run.retrieval["after"]["recall_definition"] = "pml";
  CHECK(taxon::report::retrieval_comparison(run).caption.find("pytorch-metric-learning's definition") != std::string::npos);
  run.retrieval["after"].erase("recall_definition");
  CHECK(taxon::report::retrieval_comparison(run).caption.find("definition not recorded") != std::string::npos);
}

TEST_CASE("synthetic run directory for the browser test", "[.report-fixture]") {
  const fs::path dir = fs::path(TAXON_BINARY_DIR) / "runs" / "report-synthetic";
  fs::remove_all(dir);
  write_synthetic_run(dir);
  const auto out = taxon::report::write_run_report(dir);
  REQUIRE(fs::exists(out));
}

}  // namespace test_report
