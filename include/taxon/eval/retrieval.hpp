#pragma once
// Retrieval metrics on labelled embeddings with pytorch-metric-learning's definitions (precision@1,
// R-precision, MAP@R; queries whose label has no other reference are excluded), Recall@K ("any of the top K
// shares the label") under either definition of RecallDefinition, and UNICOM/DINO-style weighted kNN-vote
// accuracy. Leave-one-out excludes the query by index. Queries are processed in blocks, so memory is
// O(block x gallery), never N x N.
#include "taxon/core/error.hpp"
#include "taxon/core/normalize.hpp"
#include "taxon/core/progress.hpp"
#include "taxon/eval/knn.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace taxon::eval {

// String labels to int64 ids; ids follow lexicographic order of the names (names[id]).
struct EncodedLabels {
  at::Tensor ids;                  // [N] int64
  std::vector<std::string> names;  // sorted, unique
};

inline EncodedLabels encode_labels(const std::vector<std::string>& labels) {
  EncodedLabels out;
  out.names = labels;
  std::sort(out.names.begin(), out.names.end());
  out.names.erase(std::unique(out.names.begin(), out.names.end()), out.names.end());
  std::unordered_map<std::string, int64_t> id;
  for (size_t i = 0; i < out.names.size(); ++i) id.emplace(out.names[i], static_cast<int64_t>(i));
  out.ids = at::empty({static_cast<int64_t>(labels.size())}, at::kLong);
  auto* p = out.ids.data_ptr<int64_t>();
  for (size_t i = 0; i < labels.size(); ++i) p[i] = id.at(labels[i]);
  return out;
}

// Which queries Recall@K averages over.
//   pml     pytorch-metric-learning's: a query whose label has no other reference ("lone") is excluded;
//   unicom  UNICOM's get_metric (deepglint/unicom unicom/retrieval.py): every query counts, a lone query is a
//           miss. UNICOM excludes the query itself positionally (its 2nd neighbour); taxon by index, which
//           differs only for exact duplicates.
// precision_at_1, R-precision and MAP@R are pytorch-metric-learning's under both (undefined for lone queries).
enum class RecallDefinition { pml, unicom };

inline const char* to_string(RecallDefinition d) { return d == RecallDefinition::unicom ? "unicom" : "pml"; }

// What each definition means, for logs and reports.
inline const char* describe(RecallDefinition d) {
  return d == RecallDefinition::unicom ? "UNICOM's: every query counts, one with no other sample of its label is a miss"
                                       : "pytorch-metric-learning's: queries with no other sample of their label are excluded";
}

inline RecallDefinition recall_definition_from_string(const std::string& s) {
  if (s == "pml") return RecallDefinition::pml;
  TAXON_CHECK(s == "unicom", "eval.bad-option", "unknown Recall@K definition '", s, "' (pml or unicom)");
  return RecallDefinition::unicom;
}

struct RetrievalOptions {
  TAXON_ARG(KnnBackend, backend) = KnnBackend::automatic;
  // Where the neighbour search runs (default: the embeddings' device); see KnnOptions::device.
  TAXON_ARG(std::optional<at::Device>, device);
  // inner_product on normalised vectors (cosine) is PML's tester default; l2 ranks identically when normalised.
  TAXON_ARG(KnnMetric, metric) = KnnMetric::inner_product;
  TAXON_ARG(bool, normalize) = true;
  TAXON_ARG(std::vector<int64_t>, recall_at) = std::vector<int64_t>{1, 5, 10};
  TAXON_ARG(RecallDefinition, recall_definition) = RecallDefinition::pml;
  // Query rows per block (0: automatic, see KnnOptions::chunk_size).
  TAXON_ARG(int64_t, chunk_size) = 0;
  // Non-empty: progress over the query blocks under this label (core/progress.hpp; a log line every ~10 s off a
  // terminal). Empty: silent, as library calls inside loops want.
  TAXON_ARG(std::string, progress_label);
};

struct RetrievalMetrics {
  double precision_at_1 = 0;
  double r_precision = 0;
  double map_at_r = 0;
  std::vector<std::pair<int64_t, double>> recall_at_k;  // (K, Recall@K) under recall_definition
  RecallDefinition recall_definition = RecallDefinition::pml;
  int64_t num_queries = 0;  // queries scored by precision@1, R-precision and MAP@R
  int64_t num_lone = 0;     // queries no reference shares a label with: excluded (pml) or misses (unicom)
  int64_t k_used = 0;       // neighbours retrieved per query (>= every R)

  double recall_at(int64_t k) const {
    for (const auto& [kk, v] : recall_at_k)
      if (kk == k) return v;
    TAXON_FAIL("eval.bad-k", "Recall@", k, " was not computed; add it to RetrievalOptions::recall_at");
  }
};

namespace detail {

inline void check_labels(const at::Tensor& labels, int64_t n, const char* name) {
  TAXON_CHECK(labels.defined() && labels.dim() == 1 && labels.size(0) == n, "eval.label-mismatch", name,
              " must be a 1-D tensor of ", n, " labels, got ", labels.defined() ? labels.sizes() : at::IntArrayRef{});
  TAXON_CHECK(!at::isFloatingType(labels.scalar_type()), "eval.label-mismatch", name,
              " must be integer class ids, got ", labels.scalar_type());
}

// For each query label, the number of gallery rows carrying it.
inline at::Tensor count_in_gallery(const at::Tensor& query_labels, const at::Tensor& gallery_labels) {
  auto [uniq, inverse, counts] = at::_unique2(gallery_labels, /*sorted=*/true, false, /*return_counts=*/true);
  auto pos = at::searchsorted(uniq, query_labels).clamp_max(uniq.size(0) - 1);
  auto found = uniq.index_select(0, pos) == query_labels;
  return at::where(found, counts.index_select(0, pos), at::zeros_like(pos));
}

inline void check_inputs(const at::Tensor& queries, const at::Tensor& query_labels, const at::Tensor& gallery,
                         const at::Tensor& gallery_labels) {
  check_matrix(queries, "queries");
  check_matrix(gallery, "gallery");
  check_labels(query_labels, queries.size(0), "query_labels");
  check_labels(gallery_labels, gallery.size(0), "gallery_labels");
}

inline RetrievalMetrics retrieval_core(at::Tensor queries, at::Tensor query_labels, at::Tensor gallery,
                                       at::Tensor gallery_labels, bool leave_one_out, const RetrievalOptions& o) {
  check_inputs(queries, query_labels, gallery, gallery_labels);
  query_labels = query_labels.to(at::kCPU, at::kLong);
  gallery_labels = gallery_labels.to(at::kCPU, at::kLong);
  if (o.normalize()) {
    queries = l2_normalize_rows(queries.to(at::kFloat));
    gallery = leave_one_out ? queries : l2_normalize_rows(gallery.to(at::kFloat));
  }
  auto R = count_in_gallery(query_labels, gallery_labels) - (leave_one_out ? 1 : 0);
  auto valid = R > 0;

  RetrievalMetrics m;
  m.num_queries = valid.sum().item<int64_t>();
  m.num_lone = queries.size(0) - m.num_queries;
  TAXON_CHECK(m.num_queries > 0, "eval.no-valid-queries", "none of the ", queries.size(0),
              " queries has a reference with the same label; retrieval metrics are undefined");
  int64_t k = R.max().item<int64_t>();
  for (auto kk : o.recall_at()) {
    TAXON_CHECK(kk >= 1, "eval.bad-k", "Recall@K needs K >= 1, got ", kk);
    k = std::max(k, kk);
  }
  k = std::min(k, gallery.size(0) - (leave_one_out ? 1 : 0));
  m.k_used = k;

  KnnIndex index(gallery,
                 KnnOptions().backend(o.backend()).device(o.device()).metric(o.metric()).chunk_size(o.chunk_size()));
  const int64_t nq = queries.size(0);
  const int64_t chunk = auto_chunk(o.chunk_size(), gallery.size(0));
  double p1 = 0, rp = 0, map = 0;
  std::vector<double> recall(o.recall_at().size(), 0.0);
  auto positions = at::arange(1, k + 1, at::kLong).unsqueeze(0);
  std::optional<Progress> progress;
  if (!o.progress_label().empty()) progress.emplace(o.progress_label(), nq, "query");
  for (int64_t s = 0; s < nq; s += chunk) {
    const int64_t c = std::min(chunk, nq - s);
    auto v = valid.narrow(0, s, c);
    if (!v.any().item<bool>()) {
      if (progress) progress->advance(c);
      continue;
    }
    auto rows = v.nonzero().flatten();
    auto q = queries.narrow(0, s, c).index_select(0, rows.to(queries.device()));
    auto ex = leave_one_out ? (rows + s) : at::Tensor();
    auto res = index.search(q, k, ex);
    auto ql = query_labels.narrow(0, s, c).index_select(0, rows);
    auto r = R.narrow(0, s, c).index_select(0, rows).unsqueeze(1);
    auto rel = gallery_labels.index_select(0, res.indices.flatten()).view_as(res.indices) == ql.unsqueeze(1);
    p1 += rel.select(1, 0).sum().item<double>();
    for (size_t i = 0; i < recall.size(); ++i) {
      const int64_t kk = std::min(o.recall_at()[i], k);
      recall[i] += rel.narrow(1, 0, kk).any(1).sum().item<double>();
    }
    auto rel_r = (rel & (positions <= r)).to(at::kDouble);
    auto rd = r.to(at::kDouble).squeeze(1);
    rp += (rel_r.sum(1) / rd).sum().item<double>();
    auto precision_at_i = rel_r.cumsum(1) / positions.to(at::kDouble);
    map += ((rel_r * precision_at_i).sum(1) / rd).sum().item<double>();
    if (progress) progress->advance(c);
  }
  const double n = static_cast<double>(m.num_queries);
  m.precision_at_1 = p1 / n;
  m.r_precision = rp / n;
  m.map_at_r = map / n;
  m.recall_definition = o.recall_definition();
  // Lone queries never have a same-label neighbour: under UNICOM's definition they only add misses.
  const double n_recall = o.recall_definition() == RecallDefinition::unicom ? n + static_cast<double>(m.num_lone) : n;
  for (size_t i = 0; i < recall.size(); ++i) m.recall_at_k.emplace_back(o.recall_at()[i], recall[i] / n_recall);
  return m;
}

}  // namespace detail

// Leave-one-out on one labelled set: every row is a query against all other rows (PML ref_includes_query).
inline RetrievalMetrics evaluate_retrieval(const at::Tensor& embeddings, const at::Tensor& labels,
                                           const RetrievalOptions& options = {}) {
  return detail::retrieval_core(embeddings, labels, embeddings, labels, true, options);
}

// Query/gallery mode: queries are searched against a separate gallery (nothing excluded).
inline RetrievalMetrics evaluate_retrieval(const at::Tensor& queries, const at::Tensor& query_labels,
                                           const at::Tensor& gallery, const at::Tensor& gallery_labels,
                                           const RetrievalOptions& options = {}) {
  return detail::retrieval_core(queries, query_labels, gallery, gallery_labels, false, options);
}

struct KnnVoteOptions {
  TAXON_ARG(int64_t, k) = 20;
  TAXON_ARG(double, temperature) = 0.07;
  TAXON_ARG(KnnBackend, backend) = KnnBackend::automatic;
  TAXON_ARG(std::optional<at::Device>, device);
  TAXON_ARG(int64_t, chunk_size) = 0;
};

struct KnnVoteAccuracy {
  double top1 = 0;
  double top5 = 0;
  int64_t num_queries = 0;
};

namespace detail {
inline KnnVoteAccuracy knn_vote_core(at::Tensor queries, at::Tensor query_labels, at::Tensor gallery,
                                     at::Tensor gallery_labels, bool leave_one_out, const KnnVoteOptions& o) {
  check_inputs(queries, query_labels, gallery, gallery_labels);
  TAXON_CHECK(o.temperature() > 0, "eval.bad-temperature", "kNN-vote temperature must be > 0, got ",
              o.temperature());
  // Dense class ids over both label sets so votes can be accumulated with scatter_add.
  auto all = at::cat({query_labels.to(at::kCPU, at::kLong), gallery_labels.to(at::kCPU, at::kLong)});
  auto inverse = std::get<1>(at::_unique2(all, true, true, false));
  auto ql = inverse.narrow(0, 0, queries.size(0));
  auto gl = inverse.narrow(0, queries.size(0), gallery.size(0));
  const int64_t classes = inverse.max().item<int64_t>() + 1;
  queries = l2_normalize_rows(queries.to(at::kFloat));
  gallery = leave_one_out ? queries : l2_normalize_rows(gallery.to(at::kFloat));
  const int64_t k = std::min(o.k(), gallery.size(0) - (leave_one_out ? 1 : 0));
  KnnIndex index(gallery, KnnOptions().backend(o.backend()).device(o.device()).chunk_size(o.chunk_size()));
  const int64_t nq = queries.size(0);
  const int64_t chunk = auto_chunk(o.chunk_size(), gallery.size(0));
  double top1 = 0, top5 = 0;
  for (int64_t s = 0; s < nq; s += chunk) {
    const int64_t c = std::min(chunk, nq - s);
    auto ex = leave_one_out ? at::arange(s, s + c, at::kLong) : at::Tensor();
    auto res = index.search(queries.narrow(0, s, c), k, ex);
    auto weights = (res.scores.to(at::kDouble) / o.temperature()).exp();
    auto votes = at::zeros({c, classes}, at::kDouble)
                     .scatter_add_(1, gl.index_select(0, res.indices.flatten()).view_as(res.indices), weights);
    auto truth = ql.narrow(0, s, c).unsqueeze(1);
    // argmax returns the first maximum: equal votes go to the smaller class id.
    top1 += (votes.argmax(1, true) == truth).sum().item<double>();
    auto top = std::get<1>(votes.topk(std::min<int64_t>(5, classes), 1));
    top5 += (top == truth).any(1).sum().item<double>();
  }
  return {top1 / static_cast<double>(nq), top5 / static_cast<double>(nq), nq};
}
}  // namespace detail

// Weighted kNN classification as UNICOM's knn.py (after DINO): normalised features, the k nearest gallery
// items vote for their class with weight exp(cos / T).
inline KnnVoteAccuracy knn_vote_accuracy(const at::Tensor& queries, const at::Tensor& query_labels,
                                         const at::Tensor& gallery, const at::Tensor& gallery_labels,
                                         const KnnVoteOptions& options = {}) {
  return detail::knn_vote_core(queries, query_labels, gallery, gallery_labels, false, options);
}

inline KnnVoteAccuracy knn_vote_accuracy(const at::Tensor& embeddings, const at::Tensor& labels,
                                         const KnnVoteOptions& options = {}) {
  return detail::knn_vote_core(embeddings, labels, embeddings, labels, true, options);
}

}  // namespace taxon::eval
