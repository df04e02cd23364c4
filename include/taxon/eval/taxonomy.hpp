#pragma once
// The NFHM/BioCosmos taxonomy evaluation (BioCosmos-AI/BioCosmos jupyter-workpad/vlm4_bio/eval_utils.py): per
// taxa group plus "All", a seeded 80/20 split (test = queries, train = gallery) and, per rank column, four
// nearest-neighbour accuracies:
//   accuracy_individual  label of the top-1 cosine neighbour;
//   accuracy_avg         class with the highest mean cosine over its gallery images (q̂ · mean_j x̂_j);
//   distance_individual  label of the top-1 Euclidean neighbour (nfhm_compat: the cosine neighbour, as the
//                        seeds' code does by mistake);
//   distance_avg         class with the lowest mean Euclidean distance over its gallery images.
// Ties: the first gallery row (gallery order = split order) for individual metrics, the lexicographically
// smallest label for class-level ones. A query whose label is absent from the gallery always counts wrong.
// Labels are cleaned first as the seeds' vlm_species_eval does (TaxonomyEvalOptions::clean_labels, on by
// default): taxa values are stripped of whitespace, and rows whose scientific name (the first rank) is blank are
// dropped before any split; the genus the seeds derive (str.split()[0]) is the same before and after stripping,
// and the species label keeps its own padding, as theirs does.
#include "taxon/core/device.hpp"
#include "taxon/core/error.hpp"
#include "taxon/core/log.hpp"
#include "taxon/core/normalize.hpp"
#include "taxon/core/options.hpp"
#include "taxon/core/seed.hpp"
#include "taxon/data/taxonomy.hpp"
#include "taxon/eval/knn.hpp"
#include "taxon/eval/retrieval.hpp"
#include "taxon/io/atomic_file.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace taxon::eval {

// Per-row labels, independent of any loader: the group column (the seeds' `category`: Fish/Bird/...) and the
// rank columns in output order (e.g. {"species", ...}, {"genus", ...}).
struct TaxonomyColumns {
  std::vector<std::string> taxa;
  std::vector<std::pair<std::string, std::vector<std::string>>> ranks;

  // The NFHM/BioCosmos evaluation's genus: the first whitespace-separated token of the scientific name.
  static std::string extract_genus(const std::string& scientific_name) { return data::genus_of(scientific_name); }

  // taxa + species (scientific name) -> ranks {species, genus} as the seeds build them.
  static TaxonomyColumns from_species(std::vector<std::string> taxa, std::vector<std::string> species) {
    TaxonomyColumns c;
    std::vector<std::string> genus;
    genus.reserve(species.size());
    for (const auto& s : species) genus.push_back(extract_genus(s));
    c.taxa = std::move(taxa);
    c.ranks.emplace_back("species", std::move(species));
    c.ranks.emplace_back("genus", std::move(genus));
    return c;
  }
};

// What the seeds' label cleaning did to the rows of one evaluation (all zero when it is off).
struct LabelCleaning {
  bool applied = false;
  int64_t rows_in = 0;         // rows given
  int64_t rows_dropped = 0;    // blank scientific name (first rank): not evaluated
  int64_t taxa_rewritten = 0;  // kept rows whose taxa value lost leading/trailing whitespace
  std::string describe() const {
    if (!applied) return c10::str("label cleaning off: all ", rows_in, " rows evaluated as given");
    return c10::str("label cleaning (as the seeds' vlm_species_eval): ", rows_dropped, " of ", rows_in,
                    " rows dropped (blank scientific name), ", taxa_rewritten, " taxa values stripped of whitespace");
  }
};

// The seeds' cleaning of `columns` (taxa stripped, rows with a blank first rank dropped). Returns the kept rows
// (indices into the input, in order) and fills `cleaned` with their labels.
inline std::vector<int64_t> clean_taxonomy_columns(const TaxonomyColumns& columns, TaxonomyColumns& cleaned,
                                                   LabelCleaning& report) {
  const size_t n = columns.taxa.size();
  report = LabelCleaning{true, static_cast<int64_t>(n), 0, 0};
  cleaned.taxa.clear();
  cleaned.ranks.clear();
  for (const auto& [name, labels] : columns.ranks) cleaned.ranks.emplace_back(name, std::vector<std::string>{});
  std::vector<int64_t> kept;
  for (size_t i = 0; i < n; ++i) {
    if (!columns.ranks.empty() && data::python_strip(columns.ranks.front().second[i]).empty()) {
      ++report.rows_dropped;
      continue;
    }
    const auto taxa = data::python_strip(columns.taxa[i]);
    if (taxa.size() != columns.taxa[i].size()) ++report.taxa_rewritten;
    cleaned.taxa.emplace_back(taxa);
    for (size_t r = 0; r < columns.ranks.size(); ++r) cleaned.ranks[r].second.push_back(columns.ranks[r].second[i]);
    kept.push_back(static_cast<int64_t>(i));
  }
  return kept;
}

struct TaxonomyRow {
  std::string model, taxa, column;
  double accuracy_individual = 0, accuracy_avg = 0, distance_individual = 0, distance_avg = 0;  // fractions
  int64_t num_queries = 0, num_gallery = 0;
};

// "xx.xx%" with two decimals, as the seeds' table prints.
inline std::string format_percent(double fraction) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f%%", 100.0 * fraction);
  return buf;
}

struct TaxonomyTable {
  std::vector<TaxonomyRow> rows;
  LabelCleaning cleaning;  // of the evaluation that made the rows (not part of the seeds' columns)

  static const std::vector<std::string>& header() {
    static const std::vector<std::string> h = {"model",       "taxa",         "column",
                                               "accuracy_individual", "accuracy_avg", "distance_individual",
                                               "distance_avg"};
    return h;
  }

  const TaxonomyRow& at(const std::string& taxa, const std::string& column) const {
    for (const auto& r : rows)
      if (r.taxa == taxa && r.column == column) return r;
    TAXON_FAIL("eval.no-such-row", "the taxonomy table has no row taxa='", taxa, "' column='", column, "'");
  }

  static std::vector<std::string> cells(const TaxonomyRow& r) {
    return {r.model, r.taxa, r.column, format_percent(r.accuracy_individual), format_percent(r.accuracy_avg),
            format_percent(r.distance_individual), format_percent(r.distance_avg)};
  }

  std::string to_csv() const {
    auto quote = [](const std::string& s) {
      if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
      std::string q = "\"";
      for (char ch : s) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
      return q + "\"";
    };
    std::string out;
    auto line = [&](const std::vector<std::string>& cs) {
      for (size_t i = 0; i < cs.size(); ++i) {
        if (i) out += ',';
        out += quote(cs[i]);  // appended separately: GCC 12 -Wrestrict misreads `"," + std::string` here
      }
      out += "\n";
    };
    line(header());
    for (const auto& r : rows) line(cells(r));
    return out;
  }

  std::string to_markdown() const {
    auto escape = [](const std::string& s) {
      std::string e;
      for (char ch : s) e += ch == '|' ? std::string("\\|") : std::string(1, ch);
      return e;
    };
    std::string out;
    auto line = [&](const std::vector<std::string>& cs) {
      out += "|";
      for (const auto& c : cs) {
        out += ' ';
        out += escape(c);  // appended separately, as in to_csv (GCC 12 -Wstringop-overflow false positive)
        out += " |";
      }
      out += "\n";
    };
    line(header());
    out += "|---|---|---|---:|---:|---:|---:|\n";
    for (const auto& r : rows) line(cells(r));
    return out;
  }

  void write_csv(const std::filesystem::path& path) const { io::write_text_atomically(path, to_csv()); }
  void write_markdown(const std::filesystem::path& path) const { io::write_text_atomically(path, to_markdown()); }
};

struct TaxonomyEvalOptions {
  TAXON_ARG(std::string, model) = "model";
  TAXON_ARG(double, test_size) = 0.2;
  TAXON_ARG(uint64_t, seed) = 0;
  // Stratify by the first rank column (species): species with one image are dropped as in the seeds
  // (stratify_keep_singletons puts them in the gallery instead); the test fraction is raised to
  // n_species / n_rows when needed so every species gets a test image, and every species keeps a gallery image.
  TAXON_ARG(bool, stratify) = false;
  TAXON_ARG(bool, stratify_keep_singletons) = false;
  // L2-normalise embeddings first (changes only the Euclidean metrics); the seeds use raw embeddings.
  TAXON_ARG(bool, normalize) = false;
  // Reproduce the seeds' bug: distance_individual reuses the cosine neighbour (equals accuracy_individual).
  TAXON_ARG(bool, nfhm_compat) = false;
  // The seeds' label cleaning (vlm_species_eval): strip whitespace from taxa values and drop rows whose
  // scientific name (the first rank) is blank before splitting. Off: every row is evaluated as given ('' is a
  // class like any other, ' Fish' and 'Fish' are two groups).
  TAXON_ARG(bool, clean_labels) = true;
  // Group order; empty = order of first appearance in TaxonomyColumns::taxa.
  TAXON_ARG(std::vector<std::string>, groups) = {};
  TAXON_ARG(bool, include_all) = true;
  TAXON_ARG(std::string, all_name) = "All";
  TAXON_ARG(std::string, taxa_column_name) = "taxa";
  // Query rows per similarity/distance block.
  TAXON_ARG(int64_t, chunk_size) = 1024;
  TAXON_ARG(at::ScalarType, dtype) = at::kFloat;
  // Where the similarity and distance blocks are computed (query block by query block on a GPU).
  TAXON_ARG(at::Device, device) = at::Device(at::kCPU);
};

struct TaxonomySplit {
  std::vector<int64_t> train;  // gallery rows, in split order
  std::vector<int64_t> test;   // query rows, in split order
};

namespace detail {

inline uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

// Uniform in [0, n) without the implementation-defined std::uniform_int_distribution, so splits are the
// same with every standard library.
inline uint64_t uniform_below(std::mt19937_64& eng, uint64_t n) {
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t x;
  do x = eng();
  while (x >= limit);
  return x % n;
}

template <typename T>
void shuffle_in_place(std::vector<T>& v, std::mt19937_64& eng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[uniform_below(eng, i)]);
}

}  // namespace detail

// The seeded split of `rows` (dataset row ids). strata: per-dataset-row stratum labels, or nullptr.
inline TaxonomySplit taxonomy_split(const std::vector<int64_t>& rows, double test_size, uint64_t seed,
                                    const std::string& group, const std::vector<std::string>* strata = nullptr,
                                    bool keep_singletons = false) {
  TAXON_CHECK(test_size > 0 && test_size < 1, "eval.bad-test-size", "test_size must be in (0, 1), got ", test_size);
  auto eng = make_engine(seed, {detail::fnv1a(group)});
  TaxonomySplit split;
  if (!strata) {
    const auto n = static_cast<int64_t>(rows.size());
    const auto n_test = static_cast<int64_t>(std::ceil(test_size * static_cast<double>(n)));
    TAXON_CHECK(n_test >= 1 && n - n_test >= 1, "eval.empty-split", "group '", group, "' has ", n,
                " rows: a test_size of ", test_size, " leaves an empty train or test set");
    auto perm = rows;
    detail::shuffle_in_place(perm, eng);
    split.test.assign(perm.begin(), perm.begin() + n_test);
    split.train.assign(perm.begin() + n_test, perm.end());
    return split;
  }
  std::map<std::string, std::vector<int64_t>> by_class;  // ordered: allocation does not depend on hashing
  for (auto r : rows) by_class[(*strata)[static_cast<size_t>(r)]].push_back(r);
  std::vector<std::vector<int64_t>> classes;
  int64_t n = 0;
  for (auto& [name, members] : by_class) {
    if (members.size() < 2) {
      if (keep_singletons) split.train.push_back(members[0]);
      continue;
    }
    n += static_cast<int64_t>(members.size());
    classes.push_back(std::move(members));
  }
  TAXON_CHECK(!classes.empty(), "eval.empty-split", "group '", group,
              "' has no species with two or more images to stratify");
  const double fraction = std::max(test_size, static_cast<double>(classes.size()) / static_cast<double>(n));
  if (fraction > test_size)
    log::info("taxonomy split '", group, "': test fraction raised from ", test_size, " to ", fraction,
              " so every one of ", classes.size(), " species gets a test image");
  const auto n_test = static_cast<int64_t>(std::ceil(fraction * static_cast<double>(n)));
  // Largest-remainder allocation of n_test over the classes, then at least one test and one gallery image each.
  std::vector<int64_t> take(classes.size());
  std::vector<std::pair<double, size_t>> remainder;
  int64_t given = 0;
  for (size_t c = 0; c < classes.size(); ++c) {
    const double exact = static_cast<double>(classes[c].size()) * static_cast<double>(n_test) / static_cast<double>(n);
    take[c] = static_cast<int64_t>(std::floor(exact));
    given += take[c];
    remainder.emplace_back(-(exact - std::floor(exact)), c);
  }
  std::stable_sort(remainder.begin(), remainder.end());
  for (size_t i = 0; given < n_test && i < remainder.size(); ++i, ++given) ++take[remainder[i].second];
  for (size_t c = 0; c < classes.size(); ++c) {
    take[c] = std::clamp<int64_t>(take[c], 1, static_cast<int64_t>(classes[c].size()) - 1);
    detail::shuffle_in_place(classes[c], eng);
    split.test.insert(split.test.end(), classes[c].begin(), classes[c].begin() + take[c]);
    split.train.insert(split.train.end(), classes[c].begin() + take[c], classes[c].end());
  }
  detail::shuffle_in_place(split.test, eng);
  detail::shuffle_in_place(split.train, eng);
  return split;
}

struct FourAccuracies {
  double accuracy_individual = 0, accuracy_avg = 0, distance_individual = 0, distance_avg = 0;
};

// The four metrics for queries Q against gallery G, for several label columns at once (the similarity and
// distance blocks are computed once and shared by all columns). Labels are per row of Q / G.
inline std::vector<FourAccuracies> score_columns(
    const at::Tensor& queries, const at::Tensor& gallery,
    const std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>>& query_gallery_labels,
    const TaxonomyEvalOptions& o) {
  detail::check_matrix(queries, "queries");
  detail::check_matrix(gallery, "gallery");
  TAXON_CHECK(queries.size(1) == gallery.size(1), "eval.dim-mismatch", "queries have ", queries.size(1),
              " dimensions, gallery ", gallery.size(1));
  require_usable(o.device());
  auto Q = queries.detach().to(o.device(), o.dtype());
  auto G = gallery.detach().to(o.device(), o.dtype());
  if (o.normalize()) {
    Q = l2_normalize_rows(Q);
    G = l2_normalize_rows(G);
  }
  const int64_t nq = Q.size(0), ng = G.size(0);
  auto Qn = l2_normalize_rows(Q), Gn = l2_normalize_rows(G);
  auto q_sq = Q.pow(2).sum(1).unsqueeze(0), g_sq = G.pow(2).sum(1, true);  // [1, nq], [ng, 1]

  struct Column {
    at::Tensor gallery_ids, query_ids, counts, mean_unit;  // mean_unit[c] = mean of x̂_j over class c
    int64_t classes = 0;
    double correct[4] = {0, 0, 0, 0};
  };
  std::vector<Column> cols;
  for (const auto& [ql, gl] : query_gallery_labels) {
    TAXON_CHECK(static_cast<int64_t>(ql.size()) == nq && static_cast<int64_t>(gl.size()) == ng,
                "eval.label-mismatch", "label columns must have ", nq, " query and ", ng, " gallery entries, got ",
                ql.size(), " and ", gl.size());
    Column c;
    auto enc = encode_labels(gl);  // ids in lexicographic order: argmax's first index = smallest label
    c.classes = static_cast<int64_t>(enc.names.size());
    std::unordered_map<std::string, int64_t> id;
    for (size_t i = 0; i < enc.names.size(); ++i) id.emplace(enc.names[i], static_cast<int64_t>(i));
    auto qids = at::empty({nq}, at::kLong);
    auto* qp = qids.data_ptr<int64_t>();
    for (int64_t i = 0; i < nq; ++i) {
      auto it = id.find(ql[static_cast<size_t>(i)]);
      qp[i] = it == id.end() ? int64_t{-1} : it->second;  // absent from gallery: never predicted
    }
    c.gallery_ids = enc.ids.to(o.device());
    c.query_ids = qids.to(o.device());
    c.counts = at::zeros({c.classes}, Q.options()).index_add_(0, c.gallery_ids, at::ones({ng}, Q.options()));
    c.mean_unit = at::zeros({c.classes, Q.size(1)}, Q.options()).index_add_(0, c.gallery_ids, Gn) /
                  c.counts.unsqueeze(1);
    cols.push_back(std::move(c));
  }

  const int64_t chunk = std::max<int64_t>(1, o.chunk_size());
  for (int64_t s = 0; s < nq; s += chunk) {
    const int64_t n = std::min(chunk, nq - s);
    auto qn = Qn.narrow(0, s, n), q = Q.narrow(0, s, n);
    auto nn_cos = at::mm(qn, Gn.t()).argmax(1);  // first maximum = first gallery row
    // Distances gallery-major ([ng, n]) so the per-class sums are contiguous row adds (index_add_ on dim 0).
    auto dist = at::addmm(g_sq, G, q.t(), 1, -2).add_(q_sq.narrow(1, s, n)).clamp_min_(0).sqrt_();
    auto nn_euc = dist.argmin(0);
    for (auto& c : cols) {
      auto truth = c.query_ids.narrow(0, s, n);
      auto pred_ind = c.gallery_ids.index_select(0, nn_cos);
      auto pred_avg = at::mm(qn, c.mean_unit.t()).argmax(1);
      auto pred_dind = o.nfhm_compat() ? pred_ind : c.gallery_ids.index_select(0, nn_euc);
      auto mean_dist = at::zeros({c.classes, n}, dist.options()).index_add_(0, c.gallery_ids, dist) /
                       c.counts.unsqueeze(1);
      auto pred_davg = mean_dist.argmin(0);  // first minimum = lexicographically smallest label
      c.correct[0] += (pred_ind == truth).sum().item<double>();
      c.correct[1] += (pred_avg == truth).sum().item<double>();
      c.correct[2] += (pred_dind == truth).sum().item<double>();
      c.correct[3] += (pred_davg == truth).sum().item<double>();
    }
  }
  std::vector<FourAccuracies> out;
  for (const auto& c : cols) {
    const double n = static_cast<double>(nq);
    out.push_back({c.correct[0] / n, c.correct[1] / n, c.correct[2] / n, c.correct[3] / n});
  }
  return out;
}

class TaxonomyEvaluator {
 public:
  explicit TaxonomyEvaluator(TaxonomyEvalOptions options = {}) : options_(std::move(options)) {}
  const TaxonomyEvalOptions& options() const { return options_; }

  // The groups evaluated, in output order (each taxa value, then "All").
  std::vector<std::string> groups(const TaxonomyColumns& columns) const {
    std::vector<std::string> g = options_.groups();
    if (g.empty())
      for (const auto& t : columns.taxa)
        if (std::find(g.begin(), g.end(), t) == g.end()) g.push_back(t);
    if (options_.include_all()) g.push_back(options_.all_name());
    return g;
  }

  // The split used for one group (rows of the whole dataset).
  TaxonomySplit split(const TaxonomyColumns& columns, const std::string& group) const {
    std::vector<int64_t> rows;
    const bool all = options_.include_all() && group == options_.all_name();
    for (size_t i = 0; i < columns.taxa.size(); ++i)
      if (all || columns.taxa[i] == group) rows.push_back(static_cast<int64_t>(i));
    TAXON_CHECK(!rows.empty(), "eval.empty-group", "no rows have taxa '", group, "'");
    return taxonomy_split(rows, options_.test_size(), options_.seed(), group,
                          options_.stratify() ? &columns.ranks.front().second : nullptr,
                          options_.stratify_keep_singletons());
  }

  TaxonomyTable evaluate(const at::Tensor& embeddings, const TaxonomyColumns& given) const {
    detail::check_matrix(embeddings, "embeddings");
    const auto n = embeddings.size(0);
    TAXON_CHECK(static_cast<int64_t>(given.taxa.size()) == n, "eval.label-mismatch", "taxa column has ",
                given.taxa.size(), " rows but embeddings have ", n);
    TAXON_CHECK(!given.ranks.empty(), "eval.label-mismatch", "no rank columns given (e.g. species, genus)");
    for (const auto& [name, labels] : given.ranks)
      TAXON_CHECK(static_cast<int64_t>(labels.size()) == n, "eval.label-mismatch", "rank column '", name,
                  "' has ", labels.size(), " rows but embeddings have ", n);
    auto emb = embeddings.detach().to(at::kCPU);
    TaxonomyTable table;
    TaxonomyColumns cleaned;
    if (options_.clean_labels()) {
      const auto kept = clean_taxonomy_columns(given, cleaned, table.cleaning);
      if (static_cast<int64_t>(kept.size()) < n)
        emb = emb.index_select(0, at::tensor(kept, at::kLong));
    } else {
      table.cleaning.rows_in = n;
    }
    const TaxonomyColumns& columns = options_.clean_labels() ? cleaned : given;
    log::info("eval ", options_.model(), ": ", table.cleaning.describe());
    for (const auto& group : groups(columns)) {
      const auto sp = split(columns, group);
      auto idx = [](const std::vector<int64_t>& v) {
        return at::from_blob(const_cast<int64_t*>(v.data()), {static_cast<int64_t>(v.size())}, at::kLong).clone();
      };
      auto Q = emb.index_select(0, idx(sp.test)), G = emb.index_select(0, idx(sp.train));
      std::vector<std::string> names;
      std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>> labels;
      auto add = [&](const std::string& name, const std::vector<std::string>& col) {
        std::vector<std::string> ql, gl;
        for (auto r : sp.test) ql.push_back(col[static_cast<size_t>(r)]);
        for (auto r : sp.train) gl.push_back(col[static_cast<size_t>(r)]);
        names.push_back(name);
        labels.emplace_back(std::move(ql), std::move(gl));
      };
      for (const auto& [name, col] : columns.ranks) add(name, col);
      if (options_.include_all() && group == options_.all_name()) add(options_.taxa_column_name(), columns.taxa);
      const auto scores = score_columns(Q, G, labels, options_);
      for (size_t i = 0; i < names.size(); ++i) {
        TaxonomyRow row{options_.model(), group, names[i], scores[i].accuracy_individual, scores[i].accuracy_avg,
                        scores[i].distance_individual, scores[i].distance_avg,
                        static_cast<int64_t>(sp.test.size()), static_cast<int64_t>(sp.train.size())};
        log::info("eval ", row.model, " ", group, "/", names[i], ": acc_ind ", format_percent(row.accuracy_individual),
                  " acc_avg ", format_percent(row.accuracy_avg), " dist_ind ",
                  format_percent(row.distance_individual), " dist_avg ", format_percent(row.distance_avg), " (",
                  row.num_queries, " queries, ", row.num_gallery, " gallery)");
        table.rows.push_back(std::move(row));
      }
    }
    return table;
  }

 private:
  TaxonomyEvalOptions options_;
};

}  // namespace taxon::eval
