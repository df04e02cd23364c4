// Retrieval metrics and kNN search: hand-built answers (ties, lone labels, self-exclusion by index),
// faiss vs LibTorch, chunked vs unchunked, and a brute-force reference of the PML definitions.
#include "taxon/eval/eval.hpp"

#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <numeric>
#include <vector>

#include "support/tensor_compare.hpp"

namespace test_eval_retrieval {

using namespace taxon::eval;

// Six 2-D integer points whose inner products are exact (see the expected values in the test).
inline at::Tensor hand_points() {
  return at::tensor({1.f, 0.f, 0.f, 1.f, 1.f, 1.f, 2.f, 0.f, 0.f, -1.f, -1.f, 0.f}).view({6, 2});
}
template <typename T>
std::vector<T> to_vec(const at::Tensor& t) {
  auto c = t.contiguous().flatten();
  return std::vector<T>(c.data_ptr<T>(), c.data_ptr<T>() + c.numel());
}

inline at::Tensor hand_labels() { return at::tensor({0L, 0L, 1L, 1L, 2L, 0L}); }

inline at::Tensor clustered(int64_t n, int64_t d, int64_t classes, uint64_t seed, at::Tensor* labels,
                            double noise = 0.8) {
  auto gen = taxon::make_generator(seed);
  auto centres = at::randn({classes, d}, gen);
  *labels = at::randint(0, classes, {n}, gen);
  return centres.index_select(0, *labels) + noise * at::randn({n, d}, gen);
}

struct Reference {
  double p1 = 0, rp = 0, map = 0, r1 = 0, r5 = 0;
  int64_t n = 0;
};

// PML definitions by brute force in double: full ranking per query, ties by gallery index.
inline Reference reference_metrics(const at::Tensor& x, const at::Tensor& labels) {
  auto xn = (x.to(at::kDouble) / x.to(at::kDouble).norm(2, {1}, true));
  auto sim = at::mm(xn, xn.t());
  const int64_t n = x.size(0);
  auto lab = labels.accessor<int64_t, 1>();
  auto s = sim.accessor<double, 2>();
  Reference ref;
  for (int64_t q = 0; q < n; ++q) {
    std::vector<int64_t> order;
    for (int64_t j = 0; j < n; ++j)
      if (j != q) order.push_back(j);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return s[q][a] > s[q][b]; });
    int64_t R = 0;
    for (auto j : order) R += lab[j] == lab[q];
    if (R == 0) continue;
    ++ref.n;
    ref.p1 += lab[order[0]] == lab[q];
    double hits = 0, ap = 0;
    for (int64_t i = 0; i < R; ++i) {
      if (lab[order[static_cast<size_t>(i)]] == lab[q]) {
        hits += 1;
        ap += hits / static_cast<double>(i + 1);
      }
    }
    ref.rp += hits / static_cast<double>(R);
    ref.map += ap / static_cast<double>(R);
    bool any1 = lab[order[0]] == lab[q], any5 = false;
    for (size_t i = 0; i < 5; ++i) any5 = any5 || lab[order[i]] == lab[q];
    ref.r1 += any1;
    ref.r5 += any5;
  }
  return ref;
}

// The test cases live in the namespace too: its using-directives must not leak into the unity build.

TEST_CASE("retrieval metrics: hand-built leave-one-out answers with ties and a lone label", "[eval]") {
  // Rankings (inner product, ties by gallery index), R = same-label count - 1:
  //  q0 A: B B A C A  R=2 -> p@1 0, RP 0,   AP@R 0
  //  q1 A: B A B A C  R=2 -> p@1 0, RP 1/2, AP@R 1/4
  //  q2 B: B A A C A  R=1 -> p@1 1, RP 1,   AP@R 1
  //  q3 B: A B A C A  R=1 -> p@1 0, RP 0,   AP@R 0
  //  q4 C: lone, excluded
  //  q5 A: A C A B B  R=2 -> p@1 1, RP 1/2, AP@R 1/2
  for (auto backend : {KnnBackend::torch, KnnBackend::faiss}) {
    auto m = evaluate_retrieval(hand_points(), hand_labels(),
                                RetrievalOptions().normalize(false).backend(backend).recall_at({1, 2, 3}));
    REQUIRE(m.num_queries == 5);
    REQUIRE(m.num_lone == 1);
    REQUIRE(m.precision_at_1 == Approx(0.4));
    REQUIRE(m.r_precision == Approx(0.4));
    REQUIRE(m.map_at_r == Approx(0.35));
    REQUIRE(m.recall_at(1) == Approx(0.4));
    REQUIRE(m.recall_at(2) == Approx(0.8));
    REQUIRE(m.recall_at(3) == Approx(1.0));
    REQUIRE_TAXON_ERROR(m.recall_at(7), "eval.bad-k");
  }
}

TEST_CASE("Recall@K under UNICOM's definition counts a query with a singleton label as a miss", "[eval]") {
  // Same points as above: q4 (label C) has no other C. pml excludes it (5 queries), unicom scores it 0 (6).
  for (auto backend : {KnnBackend::torch, KnnBackend::faiss}) {
    const auto base = RetrievalOptions().normalize(false).backend(backend).recall_at({1, 2, 3});
    auto pml = evaluate_retrieval(hand_points(), hand_labels(), base);
    auto unicom = evaluate_retrieval(hand_points(), hand_labels(),
                                     RetrievalOptions(base).recall_definition(RecallDefinition::unicom));
    REQUIRE(pml.recall_definition == RecallDefinition::pml);
    REQUIRE(unicom.recall_definition == RecallDefinition::unicom);
    REQUIRE(unicom.num_lone == 1);
    REQUIRE(unicom.recall_at(1) == Approx(2.0 / 6));
    REQUIRE(unicom.recall_at(2) == Approx(4.0 / 6));
    REQUIRE(unicom.recall_at(3) == Approx(5.0 / 6));
    REQUIRE(pml.recall_at(1) == Approx(2.0 / 5));
    // precision@1, R-precision and MAP@R keep pytorch-metric-learning's definition under both.
    REQUIRE(unicom.precision_at_1 == Approx(pml.precision_at_1));
    REQUIRE(unicom.map_at_r == Approx(pml.map_at_r));
    REQUIRE(unicom.r_precision == Approx(pml.r_precision));
  }
  // Without lone queries the two agree.
  auto labels = hand_labels().clone();
  labels[4].fill_(0);
  auto a = evaluate_retrieval(hand_points(), labels, RetrievalOptions().normalize(false));
  auto b = evaluate_retrieval(hand_points(), labels, RetrievalOptions().normalize(false).recall_definition(RecallDefinition::unicom));
  REQUIRE(a.num_lone == 0);
  REQUIRE(a.recall_at(1) == b.recall_at(1));
  REQUIRE(recall_definition_from_string("unicom") == RecallDefinition::unicom);
  REQUIRE(recall_definition_from_string("pml") == RecallDefinition::pml);
  REQUIRE(std::string(to_string(RecallDefinition::unicom)) == "unicom");
  REQUIRE_TAXON_ERROR(recall_definition_from_string("pytorch"), "eval.bad-option");
}

TEST_CASE("kNN search orders ties by gallery index and excludes the query by index", "[eval]") {
  KnnIndex index(hand_points(), KnnOptions().backend(KnnBackend::torch));
  // q1 = (0,1): scores 1 (i2) then 0 for i0, i3, i5 (tied across the k=3 boundary): lowest indices win.
  auto r = index.search(hand_points().narrow(0, 1, 1), 3, at::tensor({1L}));
  REQUIRE(to_vec<int64_t>(r.indices) == std::vector<int64_t>{2, 0, 3});
  REQUIRE(to_vec<float>(r.scores) == std::vector<float>{1.f, 0.f, 0.f});

  // Rows 0 and 1 are exact duplicates with different labels: positional exclusion ("take the 2nd hit")
  // would return row 1 itself for query 1 (ties go to the lower index); exclusion by index returns row 0.
  auto dup = at::tensor({1.f, 0.f, 1.f, 0.f, 0.f, 1.f, -1.f, 0.f}).view({4, 2});
  auto dup_labels = at::tensor({0L, 1L, 2L, 1L});
  for (auto backend : {KnnBackend::torch, KnnBackend::faiss}) {
    KnnIndex di(dup, KnnOptions().backend(backend));
    auto res = di.search(dup, 1, at::arange(4, at::kLong)).indices.flatten();
    REQUIRE(res[0].item<int64_t>() == 1);
    REQUIRE(res[1].item<int64_t>() == 0);
    REQUIRE(res[3].item<int64_t>() == 2);
    // Rows 0 and 2 are lone; q1 -> row 0 (label 0): miss; q3 -> row 2 (label 2): miss.
    auto m = evaluate_retrieval(dup, dup_labels, RetrievalOptions().backend(backend).recall_at({1}));
    REQUIRE(m.num_queries == 2);
    REQUIRE(m.precision_at_1 == Approx(0.0));
  }
}

TEST_CASE("retrieval metrics: query/gallery mode", "[eval]") {
  auto gallery = at::tensor({1.f, 0.f, 0.f, 1.f, -1.f, 0.f, 0.6f, 0.8f}).view({4, 2});
  auto glabels = at::tensor({0L, 1L, 2L, 1L});
  auto queries = at::tensor({0.9f, 0.1f, 0.f, -1.f, 0.5f, 0.5f}).view({3, 2});
  auto qlabels = at::tensor({1L, 1L, 7L});  // label 7 has no reference: lone
  // q0 scores: i0 .9, i3 .62, i1 .1, i2 -.9 -> A B B C, R=2 -> p@1 0, RP 1/2, AP@R (1/2)(1/2) = 1/4
  // q1 scores: i0 0, i2 0 (tie: i0 first), i3 -.8, i1 -1 -> A C B B, R=2 -> p@1 0, RP 0, AP@R 0
  for (auto backend : {KnnBackend::torch, KnnBackend::faiss}) {
    auto m = evaluate_retrieval(queries, qlabels, gallery, glabels,
                                RetrievalOptions().normalize(false).backend(backend).recall_at({1, 3}));
    REQUIRE(m.num_queries == 2);
    REQUIRE(m.num_lone == 1);
    REQUIRE(m.precision_at_1 == Approx(0.0));
    REQUIRE(m.r_precision == Approx(0.25));
    REQUIRE(m.map_at_r == Approx(0.125));
    REQUIRE(m.recall_at(1) == Approx(0.0));
    REQUIRE(m.recall_at(3) == Approx(1.0));
  }
}

TEST_CASE("retrieval metrics match a brute-force PML reference, and faiss, LibTorch and chunking agree", "[eval]") {
  at::Tensor labels;
  auto x = clustered(600, 16, 25, 7, &labels);
  const auto ref = reference_metrics(x, labels);
  std::vector<RetrievalMetrics> runs;
  for (auto backend : {KnnBackend::faiss, KnnBackend::torch})
    for (int64_t chunk : {0, 37})
      runs.push_back(evaluate_retrieval(x, labels, RetrievalOptions().backend(backend).chunk_size(chunk).recall_at({1, 5})));
  for (const auto& m : runs) {
    REQUIRE(m.num_queries == ref.n);
    REQUIRE(m.precision_at_1 == Approx(ref.p1 / ref.n).epsilon(1e-9));
    REQUIRE(m.r_precision == Approx(ref.rp / ref.n).epsilon(1e-9));
    REQUIRE(m.map_at_r == Approx(ref.map / ref.n).epsilon(1e-9));
    REQUIRE(m.recall_at(1) == Approx(ref.r1 / ref.n).epsilon(1e-9));
    REQUIRE(m.recall_at(5) == Approx(ref.r5 / ref.n).epsilon(1e-9));
  }
  REQUIRE(ref.map / ref.n > 0.05);
  REQUIRE(ref.map / ref.n < 0.99);

  // Both backends return the same neighbours, L2 and inner product, with and without chunking.
  auto q = x.narrow(0, 0, 100);
  for (auto metric : {KnnMetric::inner_product, KnnMetric::l2}) {
    auto a = KnnIndex(x, KnnOptions().backend(KnnBackend::faiss).metric(metric)).search(q, 10, at::arange(100, at::kLong));
    auto b = KnnIndex(x, KnnOptions().backend(KnnBackend::torch).metric(metric).chunk_size(7))
                 .search(q, 10, at::arange(100, at::kLong));
    REQUIRE(at::equal(a.indices, b.indices));
    REQUIRE_TENSORS_CLOSE(a.scores, b.scores, 1e-4, 1e-3);
  }
}

TEST_CASE("retrieval input errors carry ids", "[eval]") {
  auto x = at::randn({4, 3});
  REQUIRE_TAXON_ERROR(evaluate_retrieval(x, at::tensor({0L, 1L})), "eval.label-mismatch");
  REQUIRE_TAXON_ERROR(evaluate_retrieval(x, at::tensor({0L, 1L, 2L, 3L})), "eval.no-valid-queries");
  REQUIRE_TAXON_ERROR(evaluate_retrieval(at::randn({4}), at::tensor({0L, 1L, 2L, 3L})), "eval.bad-embeddings");
  REQUIRE_TAXON_ERROR(KnnIndex(x).search(at::randn({2, 5}), 1), "eval.dim-mismatch");
  REQUIRE_TAXON_ERROR(KnnIndex(x).search(x, 4, at::arange(4, at::kLong)), "eval.bad-k");
}

TEST_CASE("kNN-vote accuracy weights votes by exp(cos / T)", "[eval]") {
  auto gallery = at::tensor({1.f, 0.f, 0.8f, 0.6f, 0.6f, 0.8f, 0.f, 1.f}).view({4, 2});
  auto glabels = at::tensor({10L, 20L, 20L, 30L});
  auto query = at::tensor({1.f, 0.f}).view({1, 2});
  auto qlabel = at::tensor({10L});
  // k=3: votes A = e^(1/T), B = e^(0.8/T) + e^(0.6/T). T=0.07 -> A wins; T=1 -> B wins (4.05 > 2.72).
  for (auto backend : {KnnBackend::torch, KnnBackend::faiss}) {
    auto sharp = knn_vote_accuracy(query, qlabel, gallery, glabels, KnnVoteOptions().k(3).backend(backend));
    REQUIRE(sharp.top1 == 1.0);
    auto flat = knn_vote_accuracy(query, qlabel, gallery, glabels,
                                  KnnVoteOptions().k(3).temperature(1.0).backend(backend));
    REQUIRE(flat.top1 == 0.0);
    REQUIRE(flat.top5 == 1.0);
  }
  // Leave-one-out on well-separated clusters is perfect.
  at::Tensor labels;
  auto x = clustered(200, 8, 5, 3, &labels, 0.05);
  REQUIRE(knn_vote_accuracy(x, labels, KnnVoteOptions().k(10)).top1 == 1.0);
  REQUIRE_TAXON_ERROR(knn_vote_accuracy(x, labels, KnnVoteOptions().temperature(0)), "eval.bad-temperature");
}

}  // namespace test_eval_retrieval
