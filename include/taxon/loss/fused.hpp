#pragma once
// Fused margin-softmax cross-entropy: streams the class centres in chunks with an online log-sum-exp and never
// materialises the B×C logits; backward recomputes each chunk's logits to form ∂L/∂embeddings and ∂L/∂centres,
// except for the last chunks, whose dot products a fixed cache (FusedOptions::cache_bytes) keeps from forward.
// The centre normalisation is folded in (per-chunk norms, kept as [C] floats), so no normalised [C, D] copy exists.
// Extra memory: the chunk cache (≥ one [B, chunk] buffer), [C] norms and O(B·C/chunk) row statistics.
#include "taxon/core/compat.hpp"
#include "taxon/core/options.hpp"
#include "taxon/loss/cpu_kernels.hpp"
#include "taxon/loss/margin_math.hpp"
#include "taxon/loss/reference.hpp"
#include "taxon/loss/validate.hpp"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <functional>
#include <limits>

#if defined(TAXON_WITH_CUDA)
#include "taxon/cuda/fused_margin_ce_glue.hpp"
#endif

namespace taxon::loss {

// Operands of the chunk GEMMs. bf16: embeddings and centres are rounded to bfloat16 and multiplied with fp32
// accumulation and fp32 results (tensor cores on CUDA; the same rounding emulated exactly on CPU); the log-sum-exp,
// the margin and the gradients' elementwise parts stay fp32, and the fp32 centres remain the master weights.
enum class MatmulPrecision { fp32, bf16 };

struct FusedOptions {
  TAXON_ARG(std::int64_t, chunk_size) = 0;  // classes per chunk; 0 = about 4 MiB of logits per chunk
  TAXON_ARG(MatmulPrecision, matmul) = MatmulPrecision::fp32;
  // Dot products of the last chunks kept from forward for backward (which runs in reverse chunk order), so those
  // chunks skip the recompute GEMM. A fixed budget, independent of C; at least one chunk (the scratch buffer
  // itself) is always reused. 0 = pure streaming.
  TAXON_ARG(std::int64_t, cache_bytes) = std::int64_t{32} << 20;
};

// Combines per-row statistics across the ranks that hold the other class shards (loss/sharded.hpp): an in-place
// all-reduce, by max when `max` is set and by sum otherwise. Empty: one process holds every class.
using RowReduce = std::function<void(at::Tensor& rows, bool max)>;

namespace detail {

inline std::int64_t fused_chunk_size(std::int64_t requested, std::int64_t B, std::int64_t C) {
  std::int64_t ck = requested > 0 ? requested : std::clamp<std::int64_t>((std::int64_t{1} << 20) / std::max<std::int64_t>(B, 1), 512, 8192);
  return std::max<std::int64_t>(1, std::min(ck, C));
}

// Chunk buffers ("slots") the forward pass cycles through: enough for `cache_bytes`, at least 1, at most all chunks.
inline std::int64_t fused_slot_count(std::int64_t cache_bytes, std::int64_t B, std::int64_t ck, std::int64_t nchunks) {
  const std::int64_t slot_bytes = std::max<std::int64_t>(B * ck, 1) * static_cast<std::int64_t>(sizeof(float));
  return std::clamp<std::int64_t>(cache_bytes / slot_bytes, 1, std::max<std::int64_t>(nchunks, 1));
}

// out = a · b in out's dtype (fp32) whatever the operands' dtype (fp32, or bf16 for MatmulPrecision::bf16).
inline void mm_into(at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() == out.scalar_type() && b.scalar_type() == out.scalar_type()) {
    at::mm_out(out, a, b);
    return;
  }
#if TAXON_HAS_MM_OUT_DTYPE
  if (out.is_cuda()) {  // cuBLAS bf16 × bf16 → fp32
    at::mm_out(out, a, b, out.scalar_type());
    return;
  }
#endif
  // bf16 values are exact in fp32, so this is the same product up to summation order.
  at::mm_out(out, a.to(out.scalar_type()), b.to(out.scalar_type()));
}

// The CPU chunk kernels split rows (or centre rows) over the intra-op threads; the per-row work is SIMD code
// in cpu_kernels.hpp.
inline void cpu_chunk_forward(const float* dots, std::int64_t B, const cpu::ChunkView& v, float* row_max,
                              float* row_sum, float* target_cos) {
  at::parallel_for(0, B, 8, [&](std::int64_t b0, std::int64_t b1) {
    cpu::forward_rows(dots, b0, b1, v, row_max, row_sum, target_cos);
  });
}

inline void cpu_chunk_backward(float* dots, std::int64_t B, const cpu::ChunkView& v, const float* lse, float scale) {
  at::parallel_for(0, B, 8, [&](std::int64_t b0, std::int64_t b1) { cpu::backward_rows(dots, b0, b1, v, lse, scale); });
}

inline void cpu_normalize_backward(float* grad, const float* w, const float* inv_norm, const float* norm,
                                   std::int64_t n, std::int64_t D) {
  at::parallel_for(0, n, 64, [&](std::int64_t r0, std::int64_t r1) {
    cpu::normalize_backward_rows(grad, w, inv_norm, norm, r0, r1, D);
  });
}

// The per-thread buffer behind the chunk cache (see chunk_slots).
inline at::Tensor& chunk_slot_pool() {
  thread_local at::Tensor pool;
  return pool;
}

// The chunk cache for one call. Fresh large CPU buffers pay ~12 µs per 4 KiB page on first touch, so a per-thread
// buffer is reused whenever no earlier call's autograd graph still holds it.
inline at::Tensor chunk_slots(std::int64_t nslots, std::int64_t slot_elems, const at::TensorOptions& options) {
  const std::int64_t need = nslots * slot_elems;
  if (!options.device().is_cpu()) return at::empty({nslots, slot_elems}, options);
  at::Tensor& pool = chunk_slot_pool();
  if (pool.defined() && pool.storage().use_count() > 1)  // an earlier graph still holds it
    return at::empty({nslots, slot_elems}, options);
  if (!pool.defined() || pool.numel() < need) {
    pool = at::Tensor();  // give the smaller buffer back before taking the larger one
    pool = at::empty({std::max<std::int64_t>(need, 1)}, options);
  }
  return pool.narrow(0, 0, need).view({nslots, slot_elems});
}

}  // namespace detail

// Autograd function over normalised embeddings [B, D] (fp32) and raw centres [C, D] (fp32). Labels are -1 (row
// ignored), a class in [0, C) or, in a sharded head, C or more: the row's class lives on another rank, so this
// rank contributes only softmax terms and `reduce` merges the row statistics and target logits across ranks.
// Forward cycles chunk k through slot k mod S; backward walks the chunks in reverse, so the last S chunks still hold
// their dot products (the forward kernels never overwrite them) and skip the recompute GEMM; a consumed slot then
// serves as the scratch buffer for the remaining chunks. The centre norms ([C] floats) are kept for backward.
struct FusedMarginCE : torch::autograd::Function<FusedMarginCE> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& en, const at::Tensor& w,
                            const at::Tensor& labels, MarginParams p, std::int64_t chunk, std::int64_t cache_bytes,
                            bool bf16_matmul, const RowReduce& reduce = {}) {
    const std::int64_t B = en.size(0), C = w.size(0);
    const at::Tensor en_mm = bf16_matmul ? en.to(at::kBFloat16) : en;
    const std::int64_t ck = detail::fused_chunk_size(chunk, B, C);
    const std::int64_t nchunks = C == 0 ? 0 : (C + ck - 1) / ck;
    const std::int64_t nslots = detail::fused_slot_count(cache_bytes, B, ck, nchunks);
    at::Tensor stats_max = at::empty({std::max<std::int64_t>(nchunks, 1), B}, en.options());
    at::Tensor stats_sum = at::zeros({std::max<std::int64_t>(nchunks, 1), B}, en.options());
    stats_max.fill_(-std::numeric_limits<float>::infinity());
    at::Tensor target_cos = at::zeros({B}, en.options());
    at::Tensor slots = detail::chunk_slots(nslots, B * ck, en.options());
    at::Tensor norms = at::empty({C}, en.options());
    for (std::int64_t k = 0; k < nchunks; ++k) {
      const std::int64_t c0 = k * ck, n = std::min(ck, C - c0);
      const at::Tensor wk = w.narrow(0, c0, n);
      at::Tensor norm = norms.narrow(0, c0, n);
      at::norm_out(norm, wk, 2, {1});
      const at::Tensor inv_norm = 1.0 / norm.clamp_min(1e-12);
      at::Tensor logits = slots[k % nslots].narrow(0, 0, B * n).view({B, n});
      detail::mm_into(logits, en_mm, matmul_operand(wk, bf16_matmul).t());
      run_chunk_forward(logits, n, c0, inv_norm, labels, p, stats_max[k], stats_sum[k], target_cos);
    }
    // Merge the per-chunk (max, Σexp) pairs into one log-sum-exp per row.
    at::Tensor M = std::get<0>(stats_max.max(0));
    at::Tensor lse = C == 0 ? at::full({B}, -std::numeric_limits<float>::infinity(), en.options())  // no class here
                            : M + at::log((stats_sum * at::exp(stats_max - M)).sum(0));
    // The target logit comes from the one chunk (and rank) that holds the row's class.
    const at::Tensor here = (labels >= 0) & (labels < C);
    at::Tensor target = at::where(here, target_logits(target_cos, p), at::zeros_like(target_cos));
    if (reduce) {  // the same merge across ranks: global max, then the Σexp rescaled to it
      reduce(M, /*max=*/true);
      at::Tensor sum = at::exp(lse - M);
      reduce(sum, /*max=*/false);
      lse = M + at::log(sum);
      reduce(target, /*max=*/false);
    }
    const at::Tensor valid = (labels >= 0).to(en.scalar_type());
    const at::Tensor loss = ((lse - target) * valid).sum() / static_cast<double>(std::max<std::int64_t>(B, 1));
    ctx->save_for_backward({en, w});
    ctx->saved_data["labels"] = labels;
    ctx->saved_data["lse"] = lse;
    ctx->saved_data["slots"] = slots;
    ctx->saved_data["cache_live"] = true;  // backward overwrites the slots; a second backward must recompute
    ctx->saved_data["norms"] = norms;
    ctx->saved_data["chunk"] = ck;
    ctx->saved_data["s"] = static_cast<double>(p.s);
    ctx->saved_data["m1"] = static_cast<double>(p.m1);
    ctx->saved_data["m2"] = static_cast<double>(p.m2);
    ctx->saved_data["m3"] = static_cast<double>(p.m3);
    ctx->saved_data["filter"] = static_cast<double>(p.filter);
    ctx->saved_data["exact"] = p.exact;
    ctx->saved_data["bf16_matmul"] = bf16_matmul;
    return loss;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& en = saved[0];
    const at::Tensor& w = saved[1];
    const at::Tensor labels = ctx->saved_data["labels"].toTensor();
    const at::Tensor lse = ctx->saved_data["lse"].toTensor().contiguous();
    at::Tensor slots = ctx->saved_data["slots"].toTensor();
    const bool cache_live = ctx->saved_data["cache_live"].toBool();
    ctx->saved_data["cache_live"] = false;
    const at::Tensor norms = ctx->saved_data["norms"].toTensor();
    const std::int64_t ck = ctx->saved_data["chunk"].toInt();
    MarginParams p;
    p.s = static_cast<float>(ctx->saved_data["s"].toDouble());
    p.m1 = static_cast<float>(ctx->saved_data["m1"].toDouble());
    p.m2 = static_cast<float>(ctx->saved_data["m2"].toDouble());
    p.m3 = static_cast<float>(ctx->saved_data["m3"].toDouble());
    p.filter = static_cast<float>(ctx->saved_data["filter"].toDouble());
    p.exact = ctx->saved_data["exact"].toBool();
    const bool bf16_matmul = ctx->saved_data["bf16_matmul"].toBool();
    const at::Tensor en_mm = bf16_matmul ? en.to(at::kBFloat16) : en;
    const std::int64_t B = en.size(0), C = w.size(0), D = en.size(1);
    const std::int64_t nchunks = C == 0 ? 0 : (C + ck - 1) / ck;
    const std::int64_t nslots = slots.size(0);
    const float scale = grads[0].item<float>() / static_cast<float>(std::max<std::int64_t>(B, 1));
    const bool need_w = ctx->needs_input_grad(1);
    at::Tensor grad_en = at::zeros({B, D}, en.options());
    at::Tensor grad_w = need_w ? at::empty({C, D}, w.options()) : at::Tensor();
    at::Tensor grad_en_k = bf16_matmul ? at::empty({B, D}, en.options()) : at::Tensor();
    for (std::int64_t k = nchunks - 1; k >= 0; --k) {
      const std::int64_t c0 = k * ck, n = std::min(ck, C - c0);
      const at::Tensor wk = w.narrow(0, c0, n);
      const at::Tensor wk_mm = matmul_operand(wk, bf16_matmul);
      const at::Tensor norm = norms.narrow(0, c0, n);
      const at::Tensor inv_norm = 1.0 / norm.clamp_min(1e-12);
      const bool cached = cache_live && k >= nchunks - nslots;
      // Uncached chunks recompute into the slot that chunk k + nslots (already consumed) occupied.
      at::Tensor logits = slots[k % nslots].narrow(0, 0, B * n).view({B, n});
      if (!cached) detail::mm_into(logits, en_mm, wk_mm.t());
      run_chunk_backward(logits, n, c0, inv_norm, labels, p, lse, scale);
      const at::Tensor dlogits = matmul_operand(logits, bf16_matmul);
      if (bf16_matmul) {
        detail::mm_into(grad_en_k, dlogits, wk_mm);
        grad_en.add_(grad_en_k);
      } else {
        grad_en.addmm_(logits, wk);
      }
      if (need_w) {
        at::Tensor gw = grad_w.narrow(0, c0, n);
        detail::mm_into(gw, dlogits.t(), en_mm);
        run_normalize_backward(gw, wk, inv_norm, norm);
      }
    }
    return {grad_en, grad_w, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }

 private:
  static at::Tensor matmul_operand(const at::Tensor& t, bool bf16) { return bf16 ? t.to(at::kBFloat16) : t; }

  // z_y = s·margin_target(cos_y) over [B] with ATen ops (device-generic, same formula as margin_target).
  static at::Tensor target_logits(const at::Tensor& t, const MarginParams& p) {
    if (!is_angular(p)) return (t - p.m3) * p.s;
    return ((at::acos(t) * p.m1 + p.m2).clamp_max(kPi).cos() - p.m3) * p.s;
  }

  static void run_chunk_forward(at::Tensor& logits, std::int64_t n, std::int64_t c0, const at::Tensor& inv_norm,
                                const at::Tensor& labels, const MarginParams& p, at::Tensor row_max,
                                at::Tensor row_sum, at::Tensor& target_cos) {
#if defined(TAXON_WITH_CUDA)
    if (logits.is_cuda()) {
      taxon::cuda::chunk_forward(logits, n, c0, inv_norm, labels, p, row_max, row_sum, target_cos);
      return;
    }
#endif
    const cpu::ChunkView view{inv_norm.data_ptr<float>(), labels.data_ptr<std::int64_t>(), n, c0, p};
    detail::cpu_chunk_forward(logits.data_ptr<float>(), logits.size(0), view, row_max.data_ptr<float>(),
                              row_sum.data_ptr<float>(), target_cos.data_ptr<float>());
  }

  static void run_chunk_backward(at::Tensor& logits, std::int64_t n, std::int64_t c0, const at::Tensor& inv_norm,
                                 const at::Tensor& labels, const MarginParams& p, const at::Tensor& lse,
                                 float scale) {
#if defined(TAXON_WITH_CUDA)
    if (logits.is_cuda()) {
      taxon::cuda::chunk_backward(logits, n, c0, inv_norm, labels, p, lse, scale);
      return;
    }
#endif
    const cpu::ChunkView view{inv_norm.data_ptr<float>(), labels.data_ptr<std::int64_t>(), n, c0, p};
    detail::cpu_chunk_backward(logits.data_ptr<float>(), logits.size(0), view, lse.data_ptr<float>(), scale);
  }

  static void run_normalize_backward(at::Tensor& gw, const at::Tensor& wk, const at::Tensor& inv_norm,
                                     const at::Tensor& norm) {
#if defined(TAXON_WITH_CUDA)
    if (gw.is_cuda()) {
      taxon::cuda::normalize_backward(gw, wk, inv_norm, norm);
      return;
    }
#endif
    detail::cpu_normalize_backward(gw.data_ptr<float>(), wk.data_ptr<float>(), inv_norm.data_ptr<float>(),
                                   norm.data_ptr<float>(), gw.size(0), gw.size(1));
  }
};

// Fused loss from raw embeddings [B, D] (fp32, or bf16/fp16 as autocast leaves them: normalised in fp32, their
// gradient returned in their dtype) and raw centres [C, D] (fp32); same value and gradients as the reference on
// the embeddings converted to fp32. Labels already checked.
// `reduce`: see RowReduce (sharded heads only; labels may then be >= C for rows whose class is on another rank).
inline at::Tensor fused_margin_softmax_ce(const at::Tensor& embeddings, const at::Tensor& centres,
                                          const ValidLabels& labels, const MarginParams& p,
                                          const FusedOptions& options = {}, const RowReduce& reduce = {}) {
  const auto e_type = embeddings.scalar_type();
  TAXON_CHECK((e_type == at::kFloat || e_type == at::kBFloat16 || e_type == at::kHalf) &&
                  centres.scalar_type() == at::kFloat,
              "loss.bad-dtype", "the fused loss takes float32, bfloat16 or float16 embeddings and float32 centres, got ",
              e_type, " and ", centres.scalar_type());
#if !defined(TAXON_WITH_CUDA)
  TAXON_CHECK(!embeddings.is_cuda() && !centres.is_cuda(), "loss.no-cuda",
              "CUDA tensors need taxon built with TAXON_WITH_CUDA (the taxon::cuda component); got embeddings on ",
              embeddings.device(), " and centres on ", centres.device());
#endif
  TAXON_CHECK(embeddings.device() == centres.device(), "loss.device-mismatch", "embeddings on ", embeddings.device(),
              " but centres on ", centres.device());
  const at::Tensor en = l2_normalize_rows(embeddings.to(at::kFloat)).contiguous();
  // Without a backward pass to serve, one scratch slot is all the forward needs.
  const bool grad = at::GradMode::is_enabled() && (embeddings.requires_grad() || centres.requires_grad());
  return FusedMarginCE::apply(en, centres.contiguous(), labels.labels.to(embeddings.device()), p,
                              options.chunk_size(), grad ? options.cache_bytes() : std::int64_t{0},
                              options.matmul() == MatmulPrecision::bf16, reduce);
}

// Fused loss from raw embeddings [B, D] and raw centres [C, D]; checks the labels first.
inline at::Tensor fused_margin_softmax_ce(const at::Tensor& embeddings, const at::Tensor& centres,
                                          const at::Tensor& labels, const MarginParams& p,
                                          const FusedOptions& options = {}) {
  const ValidLabels y{validate_inputs(embeddings, centres, labels, centres.size(0))};
  return fused_margin_softmax_ce(embeddings, centres, y, p, options);
}

// Frees this thread's reusable chunk-cache buffer (at most FusedOptions::cache_bytes, kept between calls).
inline void release_fused_workspace() { detail::chunk_slot_pool() = at::Tensor(); }

enum class Impl { reference, fused };

// `labels`: an int64 tensor (checked here) or ValidLabels (checked by the caller, e.g. PartialFC).
template <typename Labels>
  requires std::same_as<Labels, at::Tensor> || std::same_as<Labels, ValidLabels>
inline at::Tensor margin_softmax_ce(const at::Tensor& embeddings, const at::Tensor& centres, const Labels& labels,
                                    const MarginParams& p, Impl impl = Impl::fused,
                                    const FusedOptions& options = {}) {
  const ValidLabels y = [&] {
    if constexpr (std::same_as<Labels, ValidLabels>) return labels;
    else return ValidLabels{validate_inputs(embeddings, centres, labels, centres.size(0))};
  }();
  return impl == Impl::fused ? fused_margin_softmax_ce(embeddings, centres, y, p, options)
                             : reference_margin_softmax_ce(embeddings, centres, y, p);
}

}  // namespace taxon::loss
