#pragma once
// Class samplers for PartialFC (concept ClassSampler): which class centres take part in this step's softmax.
#include "taxon/core/error.hpp"

#include <ATen/ATen.h>

#include <concepts>
#include <cstdint>
#include <string_view>

namespace taxon::pfc {

// The classes used this step. `index` holds sorted local class ids (undefined = all classes); `labels` are the
// batch labels remapped to positions in the sampled set (-1 stays -1).
struct ClassSample {
  at::Tensor index;
  at::Tensor labels;
  bool all() const { return !index.defined(); }
};

template <typename S>
concept ClassSampler = requires(const S& s, const at::Tensor& local_labels, std::int64_t num_local, at::Generator& gen) {
  { s.sample(local_labels, num_local, gen) } -> std::same_as<ClassSample>;
  { s.num_sample(num_local) } -> std::convertible_to<std::int64_t>;
  { S::name } -> std::convertible_to<std::string_view>;
};

// sample_rate 1: every class, labels unchanged.
struct AllClasses {
  static constexpr std::string_view name = "all";
  std::int64_t num_sample(std::int64_t num_local) const { return num_local; }
  ClassSample sample(const at::Tensor& local_labels, std::int64_t, at::Generator&) const {
    return {at::Tensor(), local_labels};
  }
};

// Upstream PartialFC_V2: every positive class plus uniform negatives up to int(sample_rate·num_local), sorted;
// if the positives alone exceed the budget, just the positives.
struct UniformNegatives {
  static constexpr std::string_view name = "uniform";
  double sample_rate = 0.1;
  explicit UniformNegatives(double rate = 0.1) : sample_rate(rate) {
    TAXON_CHECK(rate > 0 && rate <= 1, "pfc.bad-sample-rate", "sample_rate must be in (0, 1], got ", rate);
  }
  std::int64_t num_sample(std::int64_t num_local) const {
    return static_cast<std::int64_t>(sample_rate * static_cast<double>(num_local));
  }
  ClassSample sample(const at::Tensor& local_labels, std::int64_t num_local, at::Generator& gen) const {
    const at::Tensor y = local_labels.to(at::kCPU);
    const at::Tensor positives = std::get<0>(at::_unique(y.masked_select(y >= 0), /*sorted=*/true));
    const std::int64_t budget = num_sample(num_local);
    at::Tensor index;
    if (budget >= positives.numel()) {
      at::Tensor r = at::rand({num_local}, gen);
      r.index_fill_(0, positives, 2.0);
      index = std::get<0>(at::sort(std::get<1>(at::topk(r, budget))));
    } else {
      index = positives;
    }
    const at::Tensor valid = y >= 0;
    const at::Tensor remapped = at::where(valid, at::searchsorted(index, y.clamp_min(0)), y);
    return {index.to(local_labels.device()), remapped.to(local_labels.device())};
  }
};

static_assert(ClassSampler<AllClasses> && ClassSampler<UniformNegatives>);

}  // namespace taxon::pfc
