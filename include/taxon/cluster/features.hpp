#pragma once
// Joint features for clustering (UNICOM, the seeds' next step): L2-normalise each feature set (e.g. image and
// caption embeddings of the same rows), then average or concatenate them.
#include "taxon/core/error.hpp"
#include "taxon/core/normalize.hpp"
#include "taxon/io/npy.hpp"

#include <ATen/ATen.h>

#include <filesystem>
#include <vector>

namespace taxon::cluster {

enum class Combine { mean, concat };

// sets: [N, D_i] tensors of the same N (mean also needs equal D). renormalize: L2-normalise the result
// (the seeds' (img + txt) / 2 is not re-normalised, hence the default).
inline at::Tensor combine_features(const std::vector<at::Tensor>& sets, Combine how = Combine::mean,
                                   bool renormalize = false) {
  TAXON_CHECK(!sets.empty(), "cluster.feature-mismatch", "combine_features needs at least one feature set");
  std::vector<at::Tensor> unit;
  for (size_t i = 0; i < sets.size(); ++i) {
    const auto& s = sets[i];
    TAXON_CHECK(s.defined() && s.dim() == 2 && at::isFloatingType(s.scalar_type()), "cluster.feature-mismatch",
                "feature set ", i, " must be a floating [N, D] tensor, got ", s.defined() ? s.sizes() : at::IntArrayRef{});
    TAXON_CHECK(s.size(0) == sets[0].size(0), "cluster.feature-mismatch", "feature set ", i, " has ", s.size(0),
                " rows but set 0 has ", sets[0].size(0));
    if (how == Combine::mean)
      TAXON_CHECK(s.size(1) == sets[0].size(1), "cluster.feature-mismatch", "mean needs equal dimensions: set ", i,
                  " has ", s.size(1), ", set 0 has ", sets[0].size(1), " (use Combine::concat)");
    unit.push_back(l2_normalize_rows(s.to(at::kFloat)));
  }
  at::Tensor out = how == Combine::mean ? at::stack(unit).mean(0) : at::cat(unit, 1);
  if (renormalize) out = l2_normalize_rows(out);
  return out;
}

// Loads each .npy feature file ([N, D_i]) and combines them.
inline at::Tensor load_features(const std::vector<std::filesystem::path>& paths, Combine how = Combine::mean,
                                bool renormalize = false) {
  std::vector<at::Tensor> sets;
  for (const auto& p : paths) sets.push_back(io::load_npy(p));
  return combine_features(sets, how, renormalize);
}

}  // namespace taxon::cluster
