#pragma once
// Fused margin-softmax cross-entropy: streams the class centres in chunks with an online log-sum-exp and never
// materialises the B×C logits; backward recomputes each chunk's logits to form ∂L/∂embeddings and ∂L/∂centres.
// The centre normalisation is folded in (norms are recomputed per chunk), so no normalised [C, D] copy exists.
// Extra memory: one [B, chunk] logit buffer plus O(B·C/chunk) scalars (per-chunk row max and Σexp).
#include "taxon/core/options.hpp"
#include "taxon/loss/margin_math.hpp"
#include "taxon/loss/reference.hpp"
#include "taxon/loss/validate.hpp"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#if defined(TAXON_WITH_CUDA)
#include "taxon/cuda/fused_margin_ce_glue.hpp"
#endif

namespace taxon::loss {

struct FusedOptions {
  TAXON_ARG(std::int64_t, chunk_size) = 0;  // classes per chunk; 0 = about 4 MiB of logits per chunk
};

namespace detail {

inline std::int64_t fused_chunk_size(std::int64_t requested, std::int64_t B, std::int64_t C) {
  std::int64_t ck = requested > 0 ? requested : std::clamp<std::int64_t>((std::int64_t{1} << 20) / std::max<std::int64_t>(B, 1), 512, 8192);
  return std::max<std::int64_t>(1, std::min(ck, C));
}

// Forward rows of one chunk on the CPU: turns raw dot products into margin logits in place and writes the
// chunk's row max and Σexp(z − max); records the clamped target cosine when the target lies in this chunk.
inline void cpu_chunk_forward(float* logits, std::int64_t B, std::int64_t n, std::int64_t c0, const float* inv_norm,
                              const std::int64_t* labels, const MarginParams& p, float* row_max, float* row_sum,
                              float* target_cos) {
  at::parallel_for(0, B, 8, [&](std::int64_t b0, std::int64_t b1) {
    for (std::int64_t i = b0; i < b1; ++i) {
      float* row = logits + i * n;
      const std::int64_t t = labels[i] - c0;
      const bool has_target = labels[i] >= 0 && t >= 0 && t < n;
      const float raw_t = has_target ? row[t] * inv_norm[t] : 0.0f;
      float m = -std::numeric_limits<float>::infinity();
      for (std::int64_t j = 0; j < n; ++j) {
        float c = std::clamp(row[j] * inv_norm[j], -1.0f, 1.0f);
        if (is_filtered(p, c)) c = 0.0f;
        const float z = p.s * c;
        row[j] = z;
        m = std::max(m, z);
      }
      if (has_target) {  // the target column is never filtered
        const float c = std::clamp(raw_t, -1.0f, 1.0f);
        target_cos[i] = c;
        row[t] = p.s * margin_target(p, c);
        m = std::max(m, row[t]);
      }
      float s = 0.0f;
      for (std::int64_t j = 0; j < n; ++j) s += std::exp(row[j] - m);
      row_max[i] = m;
      row_sum[i] = s;
    }
  });
}

// Backward rows of one chunk on the CPU: turns raw dot products into ∂L/∂dot (= ∂L/∂cos / ‖w_j‖) in place.
// `scale` is grad_output / B; ignored rows get zero gradient.
inline void cpu_chunk_backward(float* logits, std::int64_t B, std::int64_t n, std::int64_t c0, const float* inv_norm,
                               const std::int64_t* labels, const MarginParams& p, const float* lse, float scale) {
  at::parallel_for(0, B, 8, [&](std::int64_t b0, std::int64_t b1) {
    for (std::int64_t i = b0; i < b1; ++i) {
      float* row = logits + i * n;
      if (labels[i] < 0) {
        std::fill(row, row + n, 0.0f);
        continue;
      }
      const std::int64_t t = labels[i] - c0;
      const bool has_target = t >= 0 && t < n;
      const float raw_t = has_target ? row[t] * inv_norm[t] : 0.0f;
      const float l = lse[i];
      const float gs = scale * p.s;
      for (std::int64_t j = 0; j < n; ++j) {
        const float raw = row[j] * inv_norm[j];
        const bool in_range = raw >= -1.0f && raw <= 1.0f;  // clamp passes gradient on [-1, 1]
        const float c = std::clamp(raw, -1.0f, 1.0f);
        const bool filtered = is_filtered(p, c);
        const float g = (filtered || !in_range) ? 0.0f : std::exp(p.s * c - l) * gs;
        row[j] = g * inv_norm[j];
      }
      if (has_target) {
        const float c = std::clamp(raw_t, -1.0f, 1.0f);
        const bool in_range = raw_t >= -1.0f && raw_t <= 1.0f;
        const float prob = std::exp(p.s * margin_target(p, c) - l);
        const float g = in_range ? (prob - 1.0f) * gs * margin_target_grad(p, c) : 0.0f;
        row[t] = g * inv_norm[t];
      }
    }
  });
}

// ∂L/∂W_j from G_j = Σ_i ∂L/∂dot_ij · ê_i, through w ↦ w / max(‖w‖, 1e-12): G_j − (G_j·w_j)·w_j / ‖w_j‖².
inline void cpu_normalize_backward(float* grad, const float* w, const float* inv_norm, const float* norm,
                                   std::int64_t n, std::int64_t D) {
  at::parallel_for(0, n, 64, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      if (norm[r] < 1e-12f) continue;  // below eps the map is w / eps: identity up to the factor already applied
      float* g = grad + r * D;
      const float* x = w + r * D;
      float dot = 0.0f;
      for (std::int64_t k = 0; k < D; ++k) dot += g[k] * x[k];
      const float f = dot * inv_norm[r] * inv_norm[r];
      for (std::int64_t k = 0; k < D; ++k) g[k] -= f * x[k];
    }
  });
}

}  // namespace detail

// Autograd function over normalised embeddings [B, D] (fp32) and raw centres [C, D] (fp32).
struct FusedMarginCE : torch::autograd::Function<FusedMarginCE> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& en, const at::Tensor& w,
                            const at::Tensor& labels, MarginParams p, std::int64_t chunk) {
    const std::int64_t B = en.size(0), C = w.size(0);
    const std::int64_t ck = detail::fused_chunk_size(chunk, B, C);
    const std::int64_t nchunks = C == 0 ? 0 : (C + ck - 1) / ck;
    at::Tensor stats_max = at::empty({std::max<std::int64_t>(nchunks, 1), B}, en.options());
    at::Tensor stats_sum = at::zeros({std::max<std::int64_t>(nchunks, 1), B}, en.options());
    stats_max.fill_(-std::numeric_limits<float>::infinity());
    at::Tensor target_cos = at::zeros({B}, en.options());
    at::Tensor buf = at::empty({B * ck}, en.options());
    for (std::int64_t k = 0; k < nchunks; ++k) {
      const std::int64_t c0 = k * ck, n = std::min(ck, C - c0);
      const at::Tensor wk = w.narrow(0, c0, n);
      // Chunk-local norms keep the extra memory independent of C (no [C] arrays).
      const at::Tensor inv_norm = 1.0 / wk.norm(2, {1}).clamp_min(1e-12);
      at::Tensor logits = buf.narrow(0, 0, B * n).view({B, n});
      at::mm_out(logits, en, wk.t());
      run_chunk_forward(logits, n, c0, inv_norm, labels, p, stats_max[k], stats_sum[k], target_cos);
    }
    buf = at::Tensor();
    // Merge the per-chunk (max, Σexp) pairs into one log-sum-exp per row.
    const at::Tensor M = std::get<0>(stats_max.max(0));
    const at::Tensor lse = M + at::log((stats_sum * at::exp(stats_max - M)).sum(0));
    const at::Tensor target = target_logits(target_cos, p);
    const at::Tensor valid = (labels >= 0).to(en.scalar_type());
    const at::Tensor loss = ((lse - target) * valid).sum() / static_cast<double>(std::max<std::int64_t>(B, 1));
    ctx->save_for_backward({en, w});
    ctx->saved_data["labels"] = labels;
    ctx->saved_data["lse"] = lse;
    ctx->saved_data["chunk"] = ck;
    ctx->saved_data["s"] = static_cast<double>(p.s);
    ctx->saved_data["m1"] = static_cast<double>(p.m1);
    ctx->saved_data["m2"] = static_cast<double>(p.m2);
    ctx->saved_data["m3"] = static_cast<double>(p.m3);
    ctx->saved_data["filter"] = static_cast<double>(p.filter);
    ctx->saved_data["exact"] = p.exact;
    return loss;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& en = saved[0];
    const at::Tensor& w = saved[1];
    const at::Tensor labels = ctx->saved_data["labels"].toTensor();
    const at::Tensor lse = ctx->saved_data["lse"].toTensor().contiguous();
    const std::int64_t ck = ctx->saved_data["chunk"].toInt();
    MarginParams p;
    p.s = static_cast<float>(ctx->saved_data["s"].toDouble());
    p.m1 = static_cast<float>(ctx->saved_data["m1"].toDouble());
    p.m2 = static_cast<float>(ctx->saved_data["m2"].toDouble());
    p.m3 = static_cast<float>(ctx->saved_data["m3"].toDouble());
    p.filter = static_cast<float>(ctx->saved_data["filter"].toDouble());
    p.exact = ctx->saved_data["exact"].toBool();
    const std::int64_t B = en.size(0), C = w.size(0), D = en.size(1);
    const float scale = grads[0].item<float>() / static_cast<float>(std::max<std::int64_t>(B, 1));
    const bool need_w = ctx->needs_input_grad(1);
    at::Tensor grad_en = at::zeros({B, D}, en.options());
    at::Tensor grad_w = need_w ? at::empty({C, D}, w.options()) : at::Tensor();
    at::Tensor buf = at::empty({B * ck}, en.options());
    for (std::int64_t c0 = 0; c0 < C; c0 += ck) {
      const std::int64_t n = std::min(ck, C - c0);
      const at::Tensor wk = w.narrow(0, c0, n);
      const at::Tensor norm = wk.norm(2, {1});
      const at::Tensor inv_norm = 1.0 / norm.clamp_min(1e-12);
      at::Tensor logits = buf.narrow(0, 0, B * n).view({B, n});
      at::mm_out(logits, en, wk.t());
      run_chunk_backward(logits, n, c0, inv_norm, labels, p, lse, scale);
      grad_en.addmm_(logits, wk);
      if (need_w) {
        at::Tensor gw = grad_w.narrow(0, c0, n);
        at::mm_out(gw, logits.t(), en);
        run_normalize_backward(gw, wk, inv_norm, norm);
      }
    }
    return {grad_en, grad_w, at::Tensor(), at::Tensor(), at::Tensor()};
  }

 private:
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
    detail::cpu_chunk_forward(logits.data_ptr<float>(), logits.size(0), n, c0, inv_norm.data_ptr<float>(),
                              labels.data_ptr<std::int64_t>(), p, row_max.data_ptr<float>(),
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
    detail::cpu_chunk_backward(logits.data_ptr<float>(), logits.size(0), n, c0, inv_norm.data_ptr<float>(),
                               labels.data_ptr<std::int64_t>(), p, lse.data_ptr<float>(), scale);
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

// Fused loss from raw embeddings [B, D] and raw centres [C, D] (fp32); same value and gradients as the reference.
inline at::Tensor fused_margin_softmax_ce(const at::Tensor& embeddings, const at::Tensor& centres,
                                          const at::Tensor& labels, const MarginParams& p,
                                          const FusedOptions& options = {}) {
  const at::Tensor y = validate_inputs("loss", embeddings, centres, labels, centres.size(0));
  TAXON_CHECK(embeddings.scalar_type() == at::kFloat && centres.scalar_type() == at::kFloat, "loss.dtype",
              "the fused loss takes float32 embeddings and centres, got ", embeddings.scalar_type(), " and ",
              centres.scalar_type());
#if !defined(TAXON_WITH_CUDA)
  TAXON_CHECK(!embeddings.is_cuda() && !centres.is_cuda(), "loss.no-cuda",
              "CUDA tensors need taxon built with TAXON_WITH_CUDA (the taxon::cuda component); got embeddings on ",
              embeddings.device(), " and centres on ", centres.device());
#endif
  TAXON_CHECK(embeddings.device() == centres.device(), "loss.device-mismatch", "embeddings on ", embeddings.device(),
              " but centres on ", centres.device());
  const at::Tensor en = l2_normalize_rows(embeddings).contiguous();
  return FusedMarginCE::apply(en, centres.contiguous(), y.to(embeddings.device()), p, options.chunk_size());
}

enum class Impl { reference, fused };

inline at::Tensor margin_softmax_ce(const at::Tensor& embeddings, const at::Tensor& centres, const at::Tensor& labels,
                                    const MarginParams& p, Impl impl = Impl::fused,
                                    const FusedOptions& options = {}) {
  return impl == Impl::fused ? fused_margin_softmax_ce(embeddings, centres, labels, p, options)
                             : reference_margin_softmax_ce(embeddings, centres, labels, p);
}

}  // namespace taxon::loss
