#pragma once
// PartialFC<Margin, Sampler>: class-centre weights [num_local, D] ~ N(0, 0.01²), class sampling, optional random
// feature sub-selection, and margin-softmax CE (reference or fused). Satisfies taxon::Head.
// With a process group of W ranks it is upstream's model-parallel PartialFC_V2 (deepglint/unicom
// unicom/partial_fc.py): rank r holds the centres of classes [class_start, class_start + num_local), the
// embeddings and labels of all ranks are gathered (pfc/all_gather.hpp), each rank samples its own negatives from
// its shard, and the softmax is normalised across ranks (loss/sharded.hpp); the loss is the same on every rank.
#include "taxon/core/error.hpp"
#include "taxon/core/options.hpp"
#include "taxon/core/seed.hpp"
#include "taxon/dist/process_group.hpp"
#include "taxon/dist/shard.hpp"
#include "taxon/io/npy.hpp"
#include "taxon/io/safetensors.hpp"
#include "taxon/loss/fused.hpp"
#include "taxon/loss/margin.hpp"
#include "taxon/loss/reference.hpp"
#include "taxon/loss/sharded.hpp"
#include "taxon/loss/validate.hpp"
#include "taxon/pfc/all_gather.hpp"
#include "taxon/pfc/concepts.hpp"
#include "taxon/pfc/sampler.hpp"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <concepts>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <utility>

namespace taxon::pfc {

struct PartialFCOptions {
  PartialFCOptions(std::int64_t num_classes, std::int64_t embedding_dim)
      : num_classes_(num_classes), embedding_dim_(embedding_dim) {}
  TAXON_ARG(std::int64_t, num_classes);
  TAXON_ARG(std::int64_t, embedding_dim);
  TAXON_ARG(std::int64_t, num_feat) = 0;  // random feature sub-selection (UNICOM sample_num_feat); 0 or >= D = all
  TAXON_ARG(loss::Impl, impl) = loss::Impl::fused;
  TAXON_ARG(std::int64_t, chunk_size) = 0;  // fused kernel classes per chunk; 0 = automatic
  // Class sharding across ranks. A distributed process group sets rank and world_size (values given here must then
  // match it); world_size > 1 without one is rejected (pfc.no-process-group): each rank would normalise over its own
  // shard only.
  TAXON_ARG(std::int64_t, rank) = 0;
  TAXON_ARG(std::int64_t, world_size) = 1;
  TAXON_ARG(dist::ProcessGroup, process_group) = dist::ProcessGroup::single();
  TAXON_ARG(std::uint64_t, seed) = 0;  // class sampling and feature selection stream (derived per rank)
};

template <loss::MarginPolicy Margin, ClassSampler Sampler = AllClasses>
class PartialFCImpl : public torch::nn::Module {
 public:
  explicit PartialFCImpl(PartialFCOptions options, Margin margin = Margin(), Sampler sampler = Sampler())
      : options_(std::move(options)), margin_(std::move(margin)), sampler_(std::move(sampler)) {
    TAXON_CHECK(options_.num_classes() > 0, "pfc.bad-option", "num_classes must be > 0, got ",
                options_.num_classes());
    TAXON_CHECK(options_.embedding_dim() > 0, "pfc.bad-option", "embedding_dim must be > 0, got ",
                options_.embedding_dim());
    // As upstream, num_feat >= D (e.g. the scripts' 512 with a 512-d head) means no sub-selection.
    TAXON_CHECK(options_.num_feat() >= 0, "pfc.bad-option", "num_feat must be >= 0 (0 = all features), got ",
                options_.num_feat());
    const dist::ProcessGroup& group = options_.process_group();
    if (group.distributed()) {
      const bool unset = options_.rank() == 0 && options_.world_size() == 1;
      TAXON_CHECK(unset || (options_.rank() == group.rank() && options_.world_size() == group.world_size()),
                  "pfc.bad-option", "PartialFCOptions rank ", options_.rank(), " / world_size ",
                  options_.world_size(), " contradict the process group's rank ", group.rank(), " of ",
                  group.world_size(), " (leave them unset)");
      options_.rank(group.rank()).world_size(group.world_size());
    }
    shard_ = dist::class_shard(options_.num_classes(), options_.rank(), options_.world_size());
    TAXON_CHECK(options_.world_size() == 1 || group.distributed(), "pfc.no-process-group",
                "PartialFCOptions world_size ", options_.world_size(), " (rank ", options_.rank(),
                ") needs a process group for the distributed softmax, and none is given; without it each rank "
                "would normalise over its own ", shard_.num_local, " of ", options_.num_classes(),
                " classes. Pass PartialFCOptions::process_group (dist::ProcessGroup::from_environment()) or use "
                "world_size 1.");
    generator_ = make_generator(options_.seed(), {0x5046435ULL, static_cast<std::uint64_t>(options_.rank())});
    reset();
  }

  void reset() {
    at::Tensor w = at::empty({shard_.num_local, options_.embedding_dim()});
    {
      at::NoGradGuard no_grad;
      w.normal_(0.0, 0.01, generator_);
    }
    weight = register_parameter("weight", w);
  }

  // Scalar loss: mean over the batch of margin-softmax CE. Embeddings [B, D] (fp32), labels [B] global class ids
  // (or -1 to ignore a row). B may change between calls.
  // Sharded (process group of W ranks): every rank calls forward with its own rows (B may differ per rank); the loss
  // is the mean over all ranks' rows, the same on every rank. The embeddings' gradient is W times this rank's share
  // of the global loss's gradient (upstream's AllGatherFunc), for a trainer that averages backbone gradients.
  at::Tensor forward(const at::Tensor& embeddings, const at::Tensor& labels) {
    if (options_.process_group().distributed()) return sharded_forward(embeddings, labels);
    const at::Tensor y = loss::validate_inputs(embeddings, weight, labels, options_.num_classes(), "PartialFC");
    const at::Tensor local = dist::localize_labels(y, shard_).to(weight.device());
    ClassSample sample = sampler_.sample(local, shard_.num_local, generator_);
    last_sample_ = sample;
    at::Tensor w = sample.all() ? weight : weight.index_select(0, sample.index);
    // Upstream gathers embeddings into fp32 buffers; the head computes in the centres' dtype (fp32) as well.
    at::Tensor e = embeddings.to(weight.device(), weight.scalar_type());
    const std::int64_t D = options_.embedding_dim();
    if (options_.num_feat() > 0 && options_.num_feat() < D) {
      const at::Tensor ids =
          at::argsort(at::rand({D}, generator_)).narrow(0, 0, options_.num_feat()).to(weight.device());
      w = w.index_select(1, ids);
      e = e.index_select(1, ids);
    }
    const auto fused = loss::FusedOptions().chunk_size(options_.chunk_size());
    if constexpr (std::same_as<Sampler, AllClasses> || std::same_as<Sampler, UniformNegatives>) {
      // Checked once above (each check is a host sync): these samplers map the checked labels into their sample.
      return loss::margin_softmax_ce(e, w, loss::ValidLabels{sample.labels}, margin_.params(), options_.impl(), fused);
    } else {
      return loss::margin_softmax_ce(e, w, sample.labels, margin_.params(), options_.impl(), fused);  // checks them
    }
  }

  // The class centres this rank owns, [num_local, D] (shares storage with the parameter).
  at::Tensor centroids() const { return weight.detach(); }

  // Every class centre [num_classes, D] in class order, on every rank (a collective when sharded: all ranks call it).
  at::Tensor all_centroids() {
    dist::ProcessGroup& group = options_.process_group();
    if (!group.distributed()) return weight.detach();
    return group.all_gather_uneven(weight.detach().to(group.device())).to(weight.device());
  }

  // Writes all_centroids() as a single-process head's file (see save_centroids): a collective when sharded, rank 0
  // writes, so a one-process run (or evaluation) can load what an N-rank run trained.
  void export_centroids(const std::filesystem::path& path) {
    const at::Tensor all = all_centroids();
    if (options_.process_group().rank() != 0) return;
    write_centroids(path, all, 0);
  }
  std::int64_t num_classes() const { return options_.num_classes(); }
  const dist::ClassShard& shard() const { return shard_; }
  const PartialFCOptions& options() const { return options_; }
  const Margin& margin() const { return margin_; }
  const Sampler& sampler() const { return sampler_; }
  at::Generator& generator() { return generator_; }

  // Writes this rank's centres: ".npy" as a bare [num_local, D] array, anything else as safetensors with tensor
  // "weight" and metadata (num_classes, class_start, num_local, embedding_dim, margin).
  void save_centroids(const std::filesystem::path& path) const { write_centroids(path, weight.detach(), shard_.class_start); }

  // Reads centres written by save_centroids (or numpy/safetensors from Python) into the parameter in place.
  void load_centroids(const std::filesystem::path& path) {
    at::Tensor w;
    if (path.extension() == ".npy") {
      w = io::load_npy(path);
    } else {
      const io::SafetensorsFile file = io::load_safetensors(path);
      w = file.get("weight");
      if (file.metadata.count("class_start")) {
        TAXON_CHECK(file.metadata.at("class_start") == std::to_string(shard_.class_start), "pfc.centroid-shape",
                    path.string(), " holds centres from class_start ", file.metadata.at("class_start"),
                    " but this rank owns classes from ", shard_.class_start);
      }
    }
    TAXON_CHECK(w.dim() == 2 && w.size(0) == weight.size(0) && w.size(1) == weight.size(1), "pfc.centroid-shape",
                path.string(), " holds centres of shape ", w.sizes(), " but this head expects ", weight.sizes());
    TAXON_CHECK(w.is_floating_point(), "pfc.centroid-shape", path.string(), " holds ", w.scalar_type(),
                " centres; expected floating point");
    at::NoGradGuard no_grad;
    weight.copy_(w);
  }
  // The class sample of the last forward (for inspection and tests).
  const ClassSample& last_sample() const { return last_sample_; }

  at::Tensor weight;

 private:
  void write_centroids(const std::filesystem::path& path, const at::Tensor& w, std::int64_t class_start) const {
    if (path.extension() == ".npy") {
      io::save_npy(path, w);
      return;
    }
    const std::map<std::string, std::string> meta = {
        {"num_classes", std::to_string(options_.num_classes())},
        {"class_start", std::to_string(class_start)},
        {"num_local", std::to_string(w.size(0))},
        {"embedding_dim", std::to_string(options_.embedding_dim())},
        {"margin", std::string(Margin::name)}};
    io::save_safetensors(path, {{"weight", w}}, meta);
  }

  // The model-parallel forward. Each rank samples from its own shard with its own generator: every class of its
  // shard that is a label anywhere in the global batch, plus uniform negatives up to int(rate·num_local) (upstream's
  // per-rank semantics); the softmax runs over the union of the ranks' samples.
  at::Tensor sharded_forward(const at::Tensor& embeddings, const at::Tensor& labels) {
    dist::ProcessGroup& group = options_.process_group();
    const c10::Device at_group = group.device();
    // Gathered before any check, so a bad input fails identically on every rank instead of leaving peers waiting.
    const at::Tensor e_all = all_gather_rows(embeddings.to(at_group, weight.scalar_type()), group).to(weight.device());
    const at::Tensor y_all = group.all_gather_uneven(labels.to(at_group)).to(weight.device());
    const at::Tensor y = loss::validate_inputs(e_all, weight, y_all, options_.num_classes(), "PartialFC");
    const at::Tensor local = dist::localize_labels(y, shard_);
    ClassSample sample = sampler_.sample(local, shard_.num_local, generator_);
    last_sample_ = sample;
    at::Tensor w = sample.all() ? weight : weight.index_select(0, sample.index);
    at::Tensor e = e_all;
    const std::int64_t D = options_.embedding_dim();
    if (options_.num_feat() > 0 && options_.num_feat() < D) {  // each rank draws its own subspace, as upstream
      const at::Tensor ids =
          at::argsort(at::rand({D}, generator_)).narrow(0, 0, options_.num_feat()).to(weight.device());
      w = w.index_select(1, ids);
      e = e.index_select(1, ids);
    }
    // -1: ignored everywhere; [0, n): this rank's sampled row; n: the class is on another rank.
    const at::Tensor elsewhere = at::full_like(y, w.size(0));
    const at::Tensor sharded = at::where(y < 0, y, at::where(sample.labels >= 0, sample.labels, elsewhere));
    const loss::RowReduce reduce = [group, at_group](at::Tensor& rows, bool max) mutable {
      at::Tensor buffer = rows.to(at_group);
      group.all_reduce_(buffer, max ? dist::ReduceOp::max : dist::ReduceOp::sum);
      if (!buffer.is_same(rows)) rows.copy_(buffer);
    };
    return loss::sharded_margin_softmax_ce(e, w, loss::ShardedLabels{sharded}, margin_.params(), options_.impl(),
                                           loss::FusedOptions().chunk_size(options_.chunk_size()), reduce);
  }

  PartialFCOptions options_;
  Margin margin_;
  Sampler sampler_;
  dist::ClassShard shard_;
  at::Generator generator_;
  ClassSample last_sample_;
};

// Module holder (TORCH_MODULE does not take template arguments).
template <loss::MarginPolicy Margin, ClassSampler Sampler = AllClasses>
class PartialFC : public torch::nn::ModuleHolder<PartialFCImpl<Margin, Sampler>> {
 public:
  using torch::nn::ModuleHolder<PartialFCImpl<Margin, Sampler>>::ModuleHolder;
  using Impl = PartialFCImpl<Margin, Sampler>;
};

static_assert(taxon::Head<PartialFC<loss::ArcFace>>);
static_assert(taxon::Head<PartialFC<loss::CosFace, UniformNegatives>>);

}  // namespace taxon::pfc
