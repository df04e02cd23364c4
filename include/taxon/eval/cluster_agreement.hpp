#pragma once
// How well a clustering agrees with known labels: mutual information, normalized mutual information (NMI),
// adjusted mutual information (AMI, corrected for chance with the expected MI of random labelings with the same
// cluster sizes) and purity. Natural logarithms and the arithmetic mean of the two entropies as normalizer, as
// sklearn's defaults (`normalized_mutual_info_score`, `adjusted_mutual_info_score`, average_method='arithmetic');
// tests/unit/test_report.cpp checks the values against sklearn 1.2.1. Label values are arbitrary integers: callers
// drop unknown labels first (taxon uses -1 for "no label at this rank").
#include "taxon/core/error.hpp"
#include "taxon/core/options.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <unordered_map>
#include <vector>

namespace taxon::eval {

// Sparse contingency table of two labelings of the same items: row = true class, column = cluster.
struct Contingency {
  int64_t n = 0;
  std::vector<int64_t> row_sums, col_sums;  // images per class / per cluster, in sorted label order
  struct Cell {
    int64_t row, col, count;
  };
  std::vector<Cell> cells;  // non-zero cells only

  static Contingency of(const std::vector<int64_t>& truth, const std::vector<int64_t>& pred) {
    TAXON_CHECK(truth.size() == pred.size(), "eval.label-mismatch", "cluster agreement: ", truth.size(),
                " true labels but ", pred.size(), " cluster labels");
    Contingency c;
    c.n = static_cast<int64_t>(truth.size());
    const auto dense = [](const std::vector<int64_t>& labels, std::vector<int64_t>& sums) {
      std::vector<int64_t> values(labels);
      std::sort(values.begin(), values.end());
      values.erase(std::unique(values.begin(), values.end()), values.end());
      std::unordered_map<int64_t, int64_t> index;
      index.reserve(values.size());
      for (size_t i = 0; i < values.size(); ++i) index.emplace(values[i], static_cast<int64_t>(i));
      std::vector<int64_t> out(labels.size());
      sums.assign(values.size(), 0);
      for (size_t i = 0; i < labels.size(); ++i) ++sums[static_cast<size_t>(out[i] = index.at(labels[i]))];
      return out;
    };
    const auto rows = dense(truth, c.row_sums), cols = dense(pred, c.col_sums);
    std::vector<int64_t> keys(rows.size());
    const auto width = static_cast<int64_t>(c.col_sums.size());
    for (size_t i = 0; i < rows.size(); ++i) keys[i] = rows[i] * width + cols[i];
    std::sort(keys.begin(), keys.end());
    for (size_t i = 0; i < keys.size();) {
      size_t j = i;
      while (j < keys.size() && keys[j] == keys[i]) ++j;
      c.cells.push_back({keys[i] / width, keys[i] % width, static_cast<int64_t>(j - i)});
      i = j;
    }
    return c;
  }
};

// Shannon entropy (nats) of a labeling given its class sizes.
inline double entropy_of_sizes(const std::vector<int64_t>& sizes) {
  double total = 0;
  for (auto s : sizes) total += static_cast<double>(s);
  if (sizes.size() <= 1 || total == 0) return 0.0;
  const double log_total = std::log(total);
  double h = 0;
  for (auto s : sizes)
    if (s > 0) h -= (static_cast<double>(s) / total) * (std::log(static_cast<double>(s)) - log_total);
  return h;
}

inline double mutual_information(const Contingency& c) {
  if (c.row_sums.size() <= 1 || c.col_sums.size() <= 1) return 0.0;
  const double n = static_cast<double>(c.n), log_n = std::log(n);
  double mi = 0;
  for (const auto& cell : c.cells) {
    const double p = static_cast<double>(cell.count) / n;
    const double outer = static_cast<double>(c.row_sums[static_cast<size_t>(cell.row)]) *
                         static_cast<double>(c.col_sums[static_cast<size_t>(cell.col)]);
    const double term = p * (std::log(static_cast<double>(cell.count)) - log_n) + p * (-std::log(outer) + 2 * log_n);
    if (std::abs(term) >= std::numeric_limits<double>::epsilon()) mi += term;  // sklearn zeroes round-off terms
  }
  return std::max(mi, 0.0);
}

struct ExpectedMutualInformationOptions {
  // Upper bound on the hypergeometric terms summed (distinct class size x distinct cluster size x overlap);
  // beyond it the expectation is not computed (NaN) rather than stalling a run for minutes.
  TAXON_ARG(double, max_terms) = 5e8;
};

// E[MI] over random labelings with the same class and cluster sizes, as scikit-learn/scikit-learn
// sklearn/metrics/cluster/_expected_mutual_info_fast.pyx: for every pair of a class of size a and a cluster of
// size b, a sum over the hypergeometric overlap n_ij. Pairs are grouped by equal sizes, so the cost depends on the
// number of distinct sizes, not of classes.
inline double expected_mutual_information(const Contingency& c, const ExpectedMutualInformationOptions& o = {}) {
  const int64_t n = c.n;
  if (c.row_sums.size() <= 1 || c.col_sums.size() <= 1) return 0.0;  // a labeling with zero entropy
  std::map<int64_t, int64_t> a_count, b_count;  // size -> how many classes / clusters have it
  for (auto a : c.row_sums) ++a_count[a];
  for (auto b : c.col_sums) ++b_count[b];
  double terms = 0;
  for (const auto& [a, ca] : a_count)
    for (const auto& [b, cb] : b_count) terms += static_cast<double>(std::min(a, b) - std::max<int64_t>(1, a + b - n) + 1);
  if (terms > o.max_terms()) return std::numeric_limits<double>::quiet_NaN();

  // lgamma, not a running sum of logs: the sum's round-off reaches 1e-6 at n = 1e6 and exp() magnifies it.
  std::vector<double> log_factorial(static_cast<size_t>(n) + 1);
  for (int64_t k = 0; k <= n; ++k) log_factorial[static_cast<size_t>(k)] = std::lgamma(static_cast<double>(k) + 1.0);
  const auto lf = [&](int64_t k) { return log_factorial[static_cast<size_t>(k)]; };
  const double dn = static_cast<double>(n), log_n = std::log(dn);
  double emi = 0;
  for (const auto& [a, ca] : a_count) {
    for (const auto& [b, cb] : b_count) {
      const double fixed = lf(a) + lf(b) + lf(n - a) + lf(n - b) - lf(n);
      const double log_ab = std::log(static_cast<double>(a)) + std::log(static_cast<double>(b));
      double pair = 0;
      for (int64_t nij = std::max<int64_t>(1, a + b - n); nij <= std::min(a, b); ++nij) {
        const double gln = fixed - lf(nij) - lf(a - nij) - lf(b - nij) - lf(n - a - b + nij);
        pair += (static_cast<double>(nij) / dn) * (log_n + std::log(static_cast<double>(nij)) - log_ab) * std::exp(gln);
      }
      emi += static_cast<double>(ca) * static_cast<double>(cb) * pair;
    }
  }
  return emi;
}

// Every agreement score of one clustering against one labeling.
struct ClusterAgreement {
  int64_t items = 0, classes = 0, clusters = 0;
  double mutual_information = 0, expected_mutual_information = 0;
  double entropy_true = 0, entropy_pred = 0;
  double nmi = 0, ami = 0;
  double purity = 0;  // fraction of items whose cluster's most frequent class is their class
};

inline ClusterAgreement cluster_agreement(const std::vector<int64_t>& truth, const std::vector<int64_t>& pred,
                                          const ExpectedMutualInformationOptions& o = {}) {
  TAXON_CHECK(!truth.empty(), "eval.empty-input", "cluster agreement of zero items");
  const auto c = Contingency::of(truth, pred);
  ClusterAgreement r;
  r.items = c.n;
  r.classes = static_cast<int64_t>(c.row_sums.size());
  r.clusters = static_cast<int64_t>(c.col_sums.size());
  std::vector<int64_t> majority(c.col_sums.size(), 0);
  for (const auto& cell : c.cells) majority[static_cast<size_t>(cell.col)] = std::max(majority[static_cast<size_t>(cell.col)], cell.count);
  int64_t agree = 0;
  for (auto m : majority) agree += m;
  r.purity = static_cast<double>(agree) / static_cast<double>(c.n);
  if (r.classes == 1 && r.clusters == 1) {  // neither labeling splits the data: a perfect match, as sklearn says
    r.nmi = r.ami = 1.0;
    return r;
  }
  r.mutual_information = mutual_information(c);
  r.entropy_true = entropy_of_sizes(c.row_sums);
  r.entropy_pred = entropy_of_sizes(c.col_sums);
  const double mean_entropy = (r.entropy_true + r.entropy_pred) / 2;
  r.nmi = r.mutual_information == 0 ? 0.0 : r.mutual_information / mean_entropy;
  r.expected_mutual_information = expected_mutual_information(c, o);
  double denominator = mean_entropy - r.expected_mutual_information;
  // E[MI] can exceed the normalizer by round-off when the match is perfect: keep the sign, avoid 0/0.
  const double eps = std::numeric_limits<double>::epsilon();
  denominator = denominator < 0 ? std::min(denominator, -eps) : std::max(denominator, eps);
  r.ami = (r.mutual_information - r.expected_mutual_information) / denominator;
  return r;
}

inline double normalized_mutual_information(const std::vector<int64_t>& truth, const std::vector<int64_t>& pred) {
  return cluster_agreement(truth, pred, ExpectedMutualInformationOptions().max_terms(-1)).nmi;
}
inline double adjusted_mutual_information(const std::vector<int64_t>& truth, const std::vector<int64_t>& pred) {
  return cluster_agreement(truth, pred).ami;
}

}  // namespace taxon::eval
