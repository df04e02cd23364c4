#pragma once
// Seeded train/test splits. The stratified split is per class: a class with n >= 2 samples gets
// clamp(round(test_fraction * n), 1, n - 1) test samples, so every such class is in both the query (test) and
// the gallery (train) set — the guarantee the min_split rule of the NFHM/BioCosmos evaluation aimed at
// (BioCosmos-AI/BioCosmos jupyter-workpad/vlm4_bio/eval_utils.py, get_test_train_split), without its missing
// `return` and with a fixed seed instead of a fresh split per run.
#include "taxon/core/error.hpp"
#include "taxon/core/seed.hpp"
#include "taxon/data/dataset.hpp"
#include "taxon/data/transforms.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <numeric>
#include <vector>

namespace taxon::data {

struct Split {
  std::vector<std::int64_t> train, test;  // dataset indices, each sorted ascending
};

// What happens to samples whose class cannot be split (a single sample) or whose label is missing (-1).
enum class Singletons { train, drop };

namespace detail {
inline void shuffle_in_place(std::vector<std::int64_t>& v, Rng& rng) {
  for (std::int64_t i = static_cast<std::int64_t>(v.size()) - 1; i > 0; --i)
    std::swap(v[static_cast<size_t>(i)], v[static_cast<size_t>(uniform_int(rng, 0, i + 1))]);
}
inline void check_fraction(double f) {
  TAXON_CHECK(f > 0.0 && f < 1.0, "data.bad-split", "test_fraction must be in (0, 1), got ", f);
}
}  // namespace detail

// Random split of n samples: round(test_fraction * n) test samples (at least 1 and at most n - 1 when n >= 2).
inline Split train_test_split(std::int64_t n, double test_fraction, std::uint64_t seed) {
  detail::check_fraction(test_fraction);
  std::vector<std::int64_t> all(static_cast<size_t>(n));
  std::iota(all.begin(), all.end(), 0);
  Rng rng = make_engine(seed, {0x53504C4954ULL /* "SPLIT" */});
  detail::shuffle_in_place(all, rng);
  std::int64_t n_test = static_cast<std::int64_t>(std::llround(test_fraction * static_cast<double>(n)));
  if (n >= 2) n_test = std::clamp<std::int64_t>(n_test, 1, n - 1);
  Split s;
  s.test.assign(all.begin(), all.begin() + n_test);
  s.train.assign(all.begin() + n_test, all.end());
  std::sort(s.train.begin(), s.train.end());
  std::sort(s.test.begin(), s.test.end());
  return s;
}

// Stratified by `labels` (one per sample, -1 = missing).
inline Split stratified_split(const std::vector<std::int64_t>& labels, double test_fraction, std::uint64_t seed,
                              Singletons singletons = Singletons::train) {
  detail::check_fraction(test_fraction);
  std::map<std::int64_t, std::vector<std::int64_t>> by_class;
  Split s;
  for (size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0) {
      if (singletons == Singletons::train) s.train.push_back(static_cast<std::int64_t>(i));
      continue;
    }
    by_class[labels[i]].push_back(static_cast<std::int64_t>(i));
  }
  for (auto& [label, members] : by_class) {
    const auto n = static_cast<std::int64_t>(members.size());
    if (n < 2) {
      if (singletons == Singletons::train) s.train.insert(s.train.end(), members.begin(), members.end());
      continue;
    }
    // Each class has its own stream, so adding a class never changes another class's split.
    Rng rng = make_engine(seed, {0x5354524154ULL /* "STRAT" */, static_cast<std::uint64_t>(label)});
    detail::shuffle_in_place(members, rng);
    const std::int64_t n_test =
        std::clamp<std::int64_t>(static_cast<std::int64_t>(std::llround(test_fraction * static_cast<double>(n))), 1, n - 1);
    s.test.insert(s.test.end(), members.begin(), members.begin() + n_test);
    s.train.insert(s.train.end(), members.begin() + n_test, members.end());
  }
  std::sort(s.train.begin(), s.train.end());
  std::sort(s.test.begin(), s.test.end());
  return s;
}

// Stratified by one rank of a dataset, e.g. stratified_split(dataset, "species", 0.2, 42).
template <Dataset D>
Split stratified_split(const D& dataset, const std::string& rank, double test_fraction, std::uint64_t seed,
                       Singletons singletons = Singletons::train) {
  return stratified_split(rank_labels(dataset, rank), test_fraction, seed, singletons);
}

// The two halves as datasets sharing the parent.
template <Dataset D>
std::pair<Subset<D>, Subset<D>> split_dataset(std::shared_ptr<const D> dataset, const Split& split) {
  return {Subset<D>(dataset, split.train), Subset<D>(dataset, split.test)};
}

}  // namespace taxon::data
