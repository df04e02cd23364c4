// The seeds' taxonomy table: hand-built metrics with ties and a test-only class, a brute-force reference,
// nfhm_compat, chunking, the seeded (stratified) split, the CSV/Markdown layout, and the seeds' label cleaning
// against their table (tests/data/label_cleaning/make_golden.py).
#include "taxon/data/csv.hpp"
#include "taxon/data/rank_spec.hpp"
#include "taxon/eval/taxonomy.hpp"
#include "taxon/io/npy.hpp"

#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "support/tensor_compare.hpp"

namespace test_eval_taxonomy {

using namespace taxon::eval;
using LabelPairs = std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>>;

// The four metrics by brute force in double: per-query loops, the seeds' tie rules spelled out.
inline FourAccuracies reference(const at::Tensor& Q, const at::Tensor& G, const std::vector<std::string>& ql,
                                const std::vector<std::string>& gl, bool nfhm) {
  auto q = Q.to(at::kDouble), g = G.to(at::kDouble);
  const int64_t nq = q.size(0), ng = g.size(0);
  std::set<std::string> names(gl.begin(), gl.end());  // sorted: first strict winner = smallest label
  FourAccuracies acc;
  for (int64_t i = 0; i < nq; ++i) {
    std::vector<double> cos(ng), dist(ng);
    for (int64_t j = 0; j < ng; ++j) {
      cos[j] = (q[i] * g[j]).sum().item<double>() / (q[i].norm().item<double>() * g[j].norm().item<double>());
      dist[j] = (q[i] - g[j]).norm().item<double>();
    }
    int64_t best_c = 0, best_d = 0;
    for (int64_t j = 1; j < ng; ++j) {
      if (cos[j] > cos[best_c]) best_c = j;
      if (dist[j] < dist[best_d]) best_d = j;
    }
    std::string avg_c, avg_d;
    double best_avg_c = -1e300, best_avg_d = 1e300;
    for (const auto& name : names) {
      double sc = 0, sd = 0, n = 0;
      for (int64_t j = 0; j < ng; ++j)
        if (gl[j] == name) sc += cos[j], sd += dist[j], n += 1;
      if (sc / n > best_avg_c) best_avg_c = sc / n, avg_c = name;
      if (sd / n < best_avg_d) best_avg_d = sd / n, avg_d = name;
    }
    acc.accuracy_individual += gl[best_c] == ql[i];
    acc.accuracy_avg += avg_c == ql[i];
    acc.distance_individual += gl[nfhm ? best_c : best_d] == ql[i];
    acc.distance_avg += avg_d == ql[i];
  }
  for (double* v : {&acc.accuracy_individual, &acc.accuracy_avg, &acc.distance_individual, &acc.distance_avg})
    *v /= static_cast<double>(nq);
  return acc;
}

inline std::vector<std::string> random_labels(int64_t n, int64_t classes, at::Generator& gen) {
  auto ids = at::randint(0, classes, {n}, gen);
  std::vector<std::string> out;
  for (int64_t i = 0; i < n; ++i) out.push_back("sp" + std::to_string(ids[i].item<int64_t>()));
  return out;
}

// A synthetic VLM4Bio-like set: 3 taxa, genera within taxa, species within genera, clustered embeddings.
inline TaxonomyColumns synthetic(int64_t per_species, at::Tensor* emb, double noise, uint64_t seed = 1) {
  auto gen = taxon::make_generator(seed);
  std::vector<std::string> taxa, species;
  std::vector<at::Tensor> rows;
  for (std::string t : {"Fish", "Bird", "Butterfly"})
    for (int g = 0; g < 3; ++g) {
      for (int s = 0; s < 3; ++s) {
        auto centre = at::randn({1, 32}, gen) * 3;
        for (int64_t i = 0; i < per_species; ++i) {
          taxa.push_back(t);
          species.push_back(t + "genus" + std::to_string(g) + " sp" + std::to_string(s));
          rows.push_back(centre + noise * at::randn({1, 32}, gen));
        }
      }
    }
  *emb = at::cat(rows);
  return TaxonomyColumns::from_species(taxa, species);
}

// The test cases live in the namespace too: its using-directives must not leak into the unity build.

TEST_CASE("taxonomy metrics: hand-built answers with ties and a class only in the test split", "[eval]") {
  // Gallery: g0 (1,0) "b x"; g1 (3,0) "a y" (same direction as g0: cosine tie); g2 (0,2) "c z".
  auto G = at::tensor({1.f, 0.f, 3.f, 0.f, 0.f, 2.f}).view({3, 2});
  // q0 (3,0) "a y": cosine tie g0/g1 -> first gallery row g0 ("b x", wrong); class mean cosine tie "a y"/"b x"
  //   -> smallest label "a y" (right); Euclidean 1-NN g1 at distance 0 (right); mean distance a:0 b:2 c:3.6 (right).
  // q1 (0,1) "c z": right everywhere. q2 (1,1) "d w": only in the test split, wrong everywhere.
  // q3 (0,-3) "c z": cosine ties g0/g1 at 0 -> g0 "b x"; class means tie a/b at 0 -> "a y"; Euclidean g0
  //   (3.16); mean distance b 3.16 < a 4.24 < c 5 -> "b x": wrong everywhere.
  auto Q = at::tensor({3.f, 0.f, 0.f, 1.f, 1.f, 1.f, 0.f, -3.f}).view({4, 2});
  LabelPairs labels = {{{"a y", "c z", "d w", "c z"}, {"b x", "a y", "c z"}},
                       {{"g1", "g2", "g3", "g2"}, {"g1", "g1", "g2"}}};
  for (int64_t chunk : {1, 3, 1024}) {
    auto s = score_columns(Q, G, labels, TaxonomyEvalOptions().chunk_size(chunk));
    REQUIRE(s[0].accuracy_individual == 0.25);
    REQUIRE(s[0].accuracy_avg == 0.5);
    REQUIRE(s[0].distance_individual == 0.5);
    REQUIRE(s[0].distance_avg == 0.5);
    // Genus g1 = {g0, g1}: q0 right everywhere, q1 right, q2 (g3, test only) and q3 wrong.
    REQUIRE(s[1].accuracy_individual == 0.5);
    REQUIRE(s[1].accuracy_avg == 0.5);
    REQUIRE(s[1].distance_individual == 0.5);
    REQUIRE(s[1].distance_avg == 0.5);
    // The seeds' bug: distance_individual reuses the cosine neighbour.
    auto compat = score_columns(Q, G, labels, TaxonomyEvalOptions().chunk_size(chunk).nfhm_compat(true));
    REQUIRE(compat[0].distance_individual == 0.25);
    REQUIRE(compat[0].distance_avg == 0.5);
  }
}

TEST_CASE("accuracy_avg is the mean cosine over the class, not the cosine to a centroid", "[eval]") {
  // Class X = {(1,0), (0,1)}: its centroid points exactly at the query (cos 1) but the mean cosine is 0.707;
  // class Y = {(3,1)} has cos 0.894, so the seeds' mean-cosine rule predicts Y.
  auto G = at::tensor({1.f, 0.f, 0.f, 1.f, 3.f, 1.f}).view({3, 2});
  auto Q = at::tensor({1.f, 1.f}).view({1, 2});
  auto s = score_columns(Q, G, {{{"Y"}, {"X", "X", "Y"}}}, TaxonomyEvalOptions());
  REQUIRE(s[0].accuracy_avg == 1.0);
  auto s2 = score_columns(Q, G, {{{"X"}, {"X", "X", "Y"}}}, TaxonomyEvalOptions());
  REQUIRE(s2[0].accuracy_avg == 0.0);
}

TEST_CASE("taxonomy metrics match a brute-force reference, with nfhm_compat and normalisation", "[eval]") {
  auto gen = taxon::make_generator(11);
  // Raw embeddings with very different norms, so cosine and Euclidean neighbours disagree often.
  auto G = at::randn({120, 6}, gen) * at::rand({120, 1}, gen).mul(4).add(0.1);
  auto Q = at::randn({50, 6}, gen) * at::rand({50, 1}, gen).mul(4).add(0.1);
  LabelPairs labels = {{random_labels(50, 9, gen), random_labels(120, 8, gen)},
                       {random_labels(50, 3, gen), random_labels(120, 3, gen)}};
  for (bool nfhm : {false, true}) {
    auto opts = TaxonomyEvalOptions().nfhm_compat(nfhm).dtype(at::kDouble).chunk_size(7);
    auto s = score_columns(Q, G, labels, opts);
    for (size_t c = 0; c < labels.size(); ++c) {
      auto r = reference(Q, G, labels[c].first, labels[c].second, nfhm);
      REQUIRE(s[c].accuracy_individual == Approx(r.accuracy_individual));
      REQUIRE(s[c].accuracy_avg == Approx(r.accuracy_avg));
      REQUIRE(s[c].distance_individual == Approx(r.distance_individual));
      REQUIRE(s[c].distance_avg == Approx(r.distance_avg));
    }
    if (nfhm) REQUIRE(s[0].distance_individual == s[0].accuracy_individual);
    else REQUIRE(s[0].distance_individual != s[0].accuracy_individual);
  }
  // Unchunked float32 gives the same answers.
  auto a = score_columns(Q, G, labels, TaxonomyEvalOptions().chunk_size(7));
  auto b = score_columns(Q, G, labels, TaxonomyEvalOptions().chunk_size(100000));
  REQUIRE(a[1].distance_avg == b[1].distance_avg);
  REQUIRE(a[1].accuracy_avg == b[1].accuracy_avg);
  // On normalised embeddings the Euclidean 1-NN is the cosine 1-NN.
  auto n = score_columns(Q, G, labels, TaxonomyEvalOptions().normalize(true).dtype(at::kDouble));
  REQUIRE(n[0].distance_individual == n[0].accuracy_individual);
}

TEST_CASE("taxonomy split: seeded, sized like sklearn, disjoint, and stratified keeps every species on both sides",
          "[eval]") {
  std::vector<int64_t> rows(103);
  std::iota(rows.begin(), rows.end(), 0);
  auto a = taxonomy_split(rows, 0.2, 5, "Fish");
  auto b = taxonomy_split(rows, 0.2, 5, "Fish");
  auto c = taxonomy_split(rows, 0.2, 6, "Fish");
  auto d = taxonomy_split(rows, 0.2, 5, "All");
  REQUIRE(a.test.size() == 21);  // ceil(0.2 * 103), as sklearn's train_test_split
  REQUIRE(a.train.size() == 82);
  REQUIRE(a.test == b.test);
  REQUIRE(a.train == b.train);
  REQUIRE(a.test != c.test);
  REQUIRE(a.test != d.test);  // 'All' (and each group) gets its own split
  std::set<int64_t> all(a.test.begin(), a.test.end());
  all.insert(a.train.begin(), a.train.end());
  REQUIRE(all.size() == 103);
  REQUIRE_TAXON_ERROR(taxonomy_split({1}, 0.2, 0, "x"), "eval.empty-split");
  REQUIRE_TAXON_ERROR(taxonomy_split(rows, 1.5, 0, "x"), "eval.bad-test-size");

  // Stratified: 10 species of 2..11 images plus 2 singletons; 0.1 is raised to 10/65 so each species is tested.
  std::vector<std::string> species;
  for (int s = 0; s < 10; ++s)
    for (int i = 0; i < s + 2; ++i) species.push_back("sp" + std::to_string(s));
  species.push_back("lone1");
  species.push_back("lone2");
  std::vector<int64_t> srows(species.size());
  std::iota(srows.begin(), srows.end(), 0);
  for (bool keep : {false, true}) {
    auto st = taxonomy_split(srows, 0.1, 3, "Bird", &species, keep);
    std::map<std::string, int> test_count, train_count;
    for (auto r : st.test) ++test_count[species[r]];
    for (auto r : st.train) ++train_count[species[r]];
    for (int s = 0; s < 10; ++s) {
      REQUIRE(test_count["sp" + std::to_string(s)] >= 1);
      REQUIRE(train_count["sp" + std::to_string(s)] >= 1);
    }
    REQUIRE(test_count.count("lone1") == 0);
    REQUIRE(train_count.count("lone1") == (keep ? 1u : 0u));
    REQUIRE(st.test.size() + st.train.size() == 65u + (keep ? 2u : 0u));
    REQUIRE(st.test.size() >= 10u);
  }
}

TEST_CASE("TaxonomyEvaluator writes the seeds' 9-row table as CSV and Markdown", "[eval]") {
  at::Tensor emb;
  auto columns = synthetic(10, &emb, 0.05);
  auto table = TaxonomyEvaluator(TaxonomyEvalOptions().model("clip").seed(42)).evaluate(emb, columns);
  REQUIRE(table.rows.size() == 9);
  std::vector<std::string> order;
  for (const auto& r : table.rows) order.push_back(r.taxa + "/" + r.column);
  REQUIRE(order == std::vector<std::string>{"Fish/species", "Fish/genus", "Bird/species", "Bird/genus",
                                            "Butterfly/species", "Butterfly/genus", "All/species", "All/genus",
                                            "All/taxa"});
  // Tight species clusters: every metric is perfect.
  for (const auto& r : table.rows) {
    REQUIRE(r.accuracy_individual == 1.0);
    REQUIRE(r.distance_avg == 1.0);
  }
  REQUIRE(table.at("Fish", "species").num_queries == 18);  // ceil(0.2 * 90)
  REQUIRE(table.at("All", "taxa").num_gallery == 216);
  REQUIRE_TAXON_ERROR(table.at("Fish", "taxa"), "eval.no-such-row");

  const std::string csv = table.to_csv();
  REQUIRE(csv.rfind("model,taxa,column,accuracy_individual,accuracy_avg,distance_individual,distance_avg\n"
                    "clip,Fish,species,100.00%,100.00%,100.00%,100.00%\n",
                    0) == 0);
  const std::string md = table.to_markdown();
  REQUIRE(md.rfind("| model | taxa | column | accuracy_individual | accuracy_avg | distance_individual | distance_avg |\n"
                   "|---|---|---|---:|---:|---:|---:|\n| clip | Fish | species | 100.00% | 100.00% | 100.00% | 100.00% |\n",
                   0) == 0);
  // The taxa label pools nine species clusters, so its class-mean cosine is not guaranteed perfect.
  REQUIRE(md.find("| clip | All | taxa | 100.00% | ") != std::string::npos);

  auto dir = std::filesystem::temp_directory_path() / ("taxon_eval_" + std::to_string(::getpid()));
  table.write_csv(dir / "table.csv");
  table.write_markdown(dir / "table.md");
  REQUIRE(taxon::io::read_file(dir / "table.csv") == csv);
  REQUIRE(taxon::io::read_file(dir / "table.md") == md);
  std::filesystem::remove_all(dir);

  // Percent formatting and CSV quoting.
  REQUIRE(format_percent(2.0 / 3.0) == "66.67%");
  REQUIRE(format_percent(0.0) == "0.00%");
  TaxonomyTable t;
  t.rows.push_back({"vit,b", "All", "species", 0.5, 0.25, 0.125, 1.0, 1, 1});
  REQUIRE(t.to_csv().find("\"vit,b\",All,species,50.00%,25.00%,12.50%,100.00%") != std::string::npos);
}

TEST_CASE("TaxonomyEvaluator: noisy clusters, determinism, options and errors", "[eval]") {
  at::Tensor emb;
  auto columns = synthetic(8, &emb, 5.0, 4);
  TaxonomyEvaluator ev(TaxonomyEvalOptions().seed(1).chunk_size(5));
  auto t1 = ev.evaluate(emb, columns);
  auto t2 = TaxonomyEvaluator(TaxonomyEvalOptions().seed(1)).evaluate(emb, columns);
  REQUIRE(t1.to_csv() == t2.to_csv());  // seeded and independent of the chunk size
  const auto& sp = t1.at("All", "species");
  REQUIRE(sp.accuracy_individual < 1.0);
  REQUIRE(sp.accuracy_individual > 0.1);
  // Genus is an easier task than species on the same split.
  REQUIRE(t1.at("All", "genus").accuracy_individual >= sp.accuracy_individual);
  auto compat = TaxonomyEvaluator(TaxonomyEvalOptions().seed(1).nfhm_compat(true)).evaluate(emb, columns);
  for (const auto& r : compat.rows) REQUIRE(r.distance_individual == r.accuracy_individual);
  auto strat = TaxonomyEvaluator(TaxonomyEvalOptions().seed(1).stratify(true).groups({"Bird"}).include_all(false))
                   .evaluate(emb, columns);
  REQUIRE(strat.rows.size() == 2);
  REQUIRE(strat.rows[0].taxa == "Bird");

  REQUIRE_TAXON_ERROR(ev.evaluate(emb.narrow(0, 0, 5), columns), "eval.label-mismatch");
  REQUIRE_TAXON_ERROR(TaxonomyEvaluator(TaxonomyEvalOptions().groups({"Mammal"})).evaluate(emb, columns),
                      "eval.empty-group");
  REQUIRE(TaxonomyColumns::extract_genus("Danaus plexippus plexippus") == "Danaus");
}

// The fixture's label columns as taxon-eval reads them: species=scientificName, genus=@genus(scientificName).
inline TaxonomyColumns cleaning_fixture_columns() {
  const auto csv = taxon::data::CsvTable::read(std::filesystem::path(TAXON_TEST_DATA_DIR) / "label_cleaning" / "fixture.csv");
  TaxonomyColumns c;
  for (const char* spec : {"species=scientificName", "genus=@genus(scientificName)"}) {
    const auto rank = taxon::data::parse_rank_spec(spec);
    c.ranks.emplace_back(rank.rank, taxon::data::rank_values(csv, rank));
  }
  for (int64_t i = 0; i < csv.num_rows(); ++i) c.taxa.push_back(csv.cell(i, "taxa"));
  return c;
}

TEST_CASE("the seeds' label cleaning: padded taxa and blank species give the seeds' table cell for cell", "[eval]") {
  const auto dir = std::filesystem::path(TAXON_TEST_DATA_DIR) / "label_cleaning";
  const auto emb = taxon::io::load_npy(dir / "embeddings.npy");
  const auto columns = cleaning_fixture_columns();
  // The seeds' code: distance_individual repeats the cosine neighbour (nfhm_compat); split seed 7 as in the script.
  const auto options = TaxonomyEvalOptions().model("trained_vlm_unicom").seed(7).nfhm_compat(true);
  const auto table = TaxonomyEvaluator(options).evaluate(emb, columns);
  REQUIRE(table.to_csv() == taxon::io::read_file(dir / "expected_table.csv"));
  REQUIRE(table.cleaning.applied);
  REQUIRE(table.cleaning.rows_in == 80);
  REQUIRE(table.cleaning.rows_dropped == 4);     // "" and "   " species
  REQUIRE(table.cleaning.taxa_rewritten == 55);  // spaces, a tab, a no-break space
  REQUIRE(table.cleaning.describe().find("4 of 80 rows dropped") != std::string::npos);

  // Off: every spelling is its own group and a blank species is a class.
  const auto raw = TaxonomyEvaluator(TaxonomyEvalOptions(options).clean_labels(false));
  const auto groups = raw.groups(columns);
  REQUIRE(std::find(groups.begin(), groups.end(), " Fish") != groups.end());
  REQUIRE(std::find(groups.begin(), groups.end(), "Bird\u00a0") != groups.end());
  const auto raw_table = raw.evaluate(emb, columns);
  REQUIRE(!raw_table.cleaning.applied);
  REQUIRE(raw_table.to_csv() != table.to_csv());
  REQUIRE(raw_table.at("All", "species").num_queries == 16);  // ceil(0.2 * 80): blank rows stay
  REQUIRE(table.at("All", "species").num_queries == 16);      // ceil(0.2 * 76)
  REQUIRE(table.at("All", "species").num_gallery == 60);
}

TEST_CASE("Python's whitespace: str.strip() and the first word of str.split() on UTF-8 labels", "[eval]") {
  using taxon::data::genus_of;
  using taxon::data::python_strip;
  REQUIRE(python_strip(" \tFish \r\n") == "Fish");
  REQUIRE(python_strip("\u00a0Bird\u3000\u2009") == "Bird");
  REQUIRE(python_strip("\x1f\u0085\u1680\u2028\u2029\u202f\u205f\u200a") == "");
  REQUIRE(python_strip("Papilio\u00a0machaon ") == "Papilio\u00a0machaon");  // inner spaces stay
  REQUIRE(python_strip("caf\u00e9 \u2013") == "caf\u00e9 \u2013");         // not spaces: é, en dash
  REQUIRE(python_strip("\u200b") == "\u200b");  // zero-width space is not whitespace in Python
  REQUIRE(genus_of("\u00a0Danio\u2003rerio") == "Danio");
  REQUIRE(genus_of("Vanessa atalanta rubria") == "Vanessa");
  REQUIRE(genus_of(" \u3000 ").empty());
  TaxonomyColumns c{{" Fish", "Fish", "Fish  "}, {{"species", {"Danio rerio", " \u00a0", "Salmo trutta"}}}};
  TaxonomyColumns cleaned;
  LabelCleaning report;
  REQUIRE(clean_taxonomy_columns(c, cleaned, report) == std::vector<int64_t>{0, 2});
  REQUIRE(cleaned.taxa == std::vector<std::string>{"Fish", "Fish"});
  REQUIRE(report.rows_dropped == 1);
  REQUIRE(report.taxa_rewritten == 2);
}

}  // namespace test_eval_taxonomy
