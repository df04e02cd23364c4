#pragma once
// Class sharding across ranks, as deepglint/unicom unicom/partial_fc.py (PartialFC_V2) shards the class centres:
// rank r owns classes [class_start, class_start + num_local).
// Single-process training is world_size 1; the distributed head is an extension of this arithmetic.
#include "taxon/core/error.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>

namespace taxon::dist {

struct ClassShard {
  std::int64_t class_start = 0;
  std::int64_t num_local = 0;
  bool owns(std::int64_t label) const { return label >= class_start && label < class_start + num_local; }
};

// num_local = C / W + (rank < C % W); class_start = (C / W)·rank + min(rank, C % W).
inline ClassShard class_shard(std::int64_t num_classes, std::int64_t rank, std::int64_t world_size) {
  TAXON_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "dist.bad-rank", "rank ", rank,
              " is not in [0, world_size = ", world_size, ")");
  TAXON_CHECK(num_classes >= 0, "dist.bad-rank", "num_classes must be >= 0, got ", num_classes);
  const std::int64_t q = num_classes / world_size, r = num_classes % world_size;
  return {q * rank + std::min(rank, r), q + (rank < r ? 1 : 0)};
}

// Global labels -> this rank's local labels; labels this rank does not own (and -1) become -1.
inline at::Tensor localize_labels(const at::Tensor& labels, const ClassShard& shard) {
  const at::Tensor own = (labels >= shard.class_start) & (labels < shard.class_start + shard.num_local);
  return at::where(own, labels - shard.class_start, at::full_like(labels, -1));
}

}  // namespace taxon::dist
