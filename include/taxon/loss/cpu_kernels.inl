// Body of the fused-loss CPU kernels for one vector width. Included by cpu_kernels.hpp once per instruction set,
// inside a namespace that defines `constexpr int W` (float lanes) and under a matching target pragma, so every
// function here is compiled for that instruction set. No include guard on purpose.

struct S {
  typedef float F __attribute__((vector_size(4 * W)));
  typedef std::int32_t I __attribute__((vector_size(4 * W)));

  static inline F load(const float* p) {
    F v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  static inline void store(float* p, F v) { std::memcpy(p, &v, sizeof v); }
  static inline F set(float x) { return F{} + x; }
  static inline F as_float(I v) {
    F f;
    std::memcpy(&f, &v, sizeof f);
    return f;
  }
  static inline I as_int(F v) {
    I i;
    std::memcpy(&i, &v, sizeof i);
    return i;
  }
  // mask lanes are all-ones or zero (the result of a vector comparison)
  static inline F select(I mask, F a, F b) { return as_float((mask & as_int(a)) | (~mask & as_int(b))); }
  static inline F min(F a, F b) { return select(a < b, a, b); }
  static inline F max(F a, F b) { return select(a > b, a, b); }
  static inline float hmax(F v) {
    float m = v[0];
    for (int k = 1; k < W; ++k) m = std::max(m, v[k]);
    return m;
  }
  static inline float hsum(F v) {
    float s = 0.0f;
    for (int k = 0; k < W; ++k) s += v[k];
    return s;
  }

  // e^x for x ≤ 0 (every caller exponentiates a value minus a running max or a log-sum-exp): Cephes' degree-6
  // polynomial after range reduction by ln 2, within 2 ulp of std::exp; exact 0 below the float range.
  static inline F exp(F x) {
    const F lo = set(-87.33654f);
    const I underflow = x < lo;
    x = max(x, lo);
    const F round = set(12582912.0f);  // 1.5·2^23: adding it rounds to the nearest integer in the low mantissa bits
    const F t = x * set(1.44269504088896341f) + round;
    const I n = as_int(t) - as_int(round);
    const F nf = t - round;
    const F r = x - nf * set(0.693359375f) - nf * set(-2.12194440e-4f);
    F p = set(1.9875691500e-4f);
    p = p * r + set(1.3981999507e-3f);
    p = p * r + set(8.3334519073e-3f);
    p = p * r + set(4.1665795894e-2f);
    p = p * r + set(1.6666665459e-1f);
    p = p * r + set(5.0000001201e-1f);
    p = p * (r * r) + r + set(1.0f);
    const F scale = as_float((n + 127) << 23);
    return select(underflow, set(0.0f), p * scale);
  }
};

// z = s·cos with cos = clamp(dot·inv_norm, −1, 1), zeroed when filtered; the target column is handled by callers.
inline S::F logit(S::F dot, S::F inv, float s, float filter) {
  auto c = S::min(S::max(dot * inv, S::set(-1.0f)), S::set(1.0f));
  if (filter > 0.0f) c = S::select(c > S::set(filter), S::set(0.0f), c);
  return c * S::set(s);
}

inline float scalar_logit(float dot, float inv, float s, float filter) {
  float c = std::clamp(dot * inv, -1.0f, 1.0f);
  if (filter > 0.0f && c > filter) c = 0.0f;
  return s * c;
}

inline float max_logit(const float* dots, const float* inv, std::int64_t j0, std::int64_t j1,
                                  const MarginParams& p) {
  auto m = S::set(-std::numeric_limits<float>::infinity());
  std::int64_t j = j0;
  for (; j + W <= j1; j += W) m = S::max(m, logit(S::load(dots + j), S::load(inv + j), p.s, p.filter));
  float r = S::hmax(m);
  for (; j < j1; ++j) r = std::max(r, scalar_logit(dots[j], inv[j], p.s, p.filter));
  return r;
}

inline float sum_exp(const float* dots, const float* inv, std::int64_t j0, std::int64_t j1,
                                const MarginParams& p, float shift) {
  auto acc0 = S::set(0.0f), acc1 = S::set(0.0f);
  const auto sh = S::set(shift);
  std::int64_t j = j0;
  for (; j + 2 * W <= j1; j += 2 * W) {  // two accumulators hide the add latency
    acc0 += S::exp(logit(S::load(dots + j), S::load(inv + j), p.s, p.filter) - sh);
    acc1 += S::exp(logit(S::load(dots + j + W), S::load(inv + j + W), p.s, p.filter) - sh);
  }
  for (; j + W <= j1; j += W) acc0 += S::exp(logit(S::load(dots + j), S::load(inv + j), p.s, p.filter) - sh);
  float r = S::hsum(acc0 + acc1);
  for (; j < j1; ++j) {
    const auto one = S::exp(S::set(scalar_logit(dots[j], inv[j], p.s, p.filter) - shift));
    r += one[0];
  }
  return r;
}

// ∂L/∂dot_j = 1[unfiltered, raw cos in [−1, 1]] · e^(z_j − lse) · gs · inv_norm_j, written over the dots.
inline void softmax_grad(float* row, const float* inv, std::int64_t j0, std::int64_t j1,
                                    const MarginParams& p, float lse, float gs) {
  const auto one = S::set(1.0f), minus_one = S::set(-1.0f), zero = S::set(0.0f);
  const auto s = S::set(p.s), l = S::set(lse), g = S::set(gs);
  std::int64_t j = j0;
  for (; j + W <= j1; j += W) {
    const auto inv_v = S::load(inv + j);
    const auto raw = S::load(row + j) * inv_v;
    auto keep = (raw >= minus_one) & (raw <= one);  // clamp passes gradient on [−1, 1] only
    if (p.filter > 0.0f) keep &= raw <= S::set(p.filter);
    S::store(row + j, S::select(keep, S::exp(raw * s - l) * g * inv_v, zero));
  }
  for (; j < j1; ++j) {
    const float raw = row[j] * inv[j];
    const bool keep = raw >= -1.0f && raw <= 1.0f && !(p.filter > 0.0f && raw > p.filter);
    row[j] = keep ? S::exp(S::set(p.s * raw - lse))[0] * gs * inv[j] : 0.0f;
  }
}

// Forward rows [r0, r1) of one chunk: per-row max and Σexp(z − max) with the margin on the target column; the raw
// dots are left intact (a later pass may reuse them). Records the clamped target cosine when the target is here.
inline void forward_rows(const float* dots, std::int64_t r0, std::int64_t r1, const ChunkView& v,
                                    float* row_max, float* row_sum, float* target_cos) {
  const std::int64_t n = v.n;
  for (std::int64_t i = r0; i < r1; ++i) {
    const float* row = dots + i * n;
    const std::int64_t t = v.labels[i] - v.c0;
    const bool has_target = v.labels[i] >= 0 && t >= 0 && t < n;
    if (!has_target) {
      const float m = max_logit(row, v.inv_norm, 0, n, v.p);
      row_max[i] = m;
      row_sum[i] = sum_exp(row, v.inv_norm, 0, n, v.p, m);
      continue;
    }
    const float c = std::clamp(row[t] * v.inv_norm[t], -1.0f, 1.0f);  // the target column is never filtered
    const float zt = v.p.s * margin_target(v.p, c);
    target_cos[i] = c;
    const float m = std::max({max_logit(row, v.inv_norm, 0, t, v.p), max_logit(row, v.inv_norm, t + 1, n, v.p), zt});
    row_max[i] = m;
    row_sum[i] = sum_exp(row, v.inv_norm, 0, t, v.p, m) + sum_exp(row, v.inv_norm, t + 1, n, v.p, m) +
                 S::exp(S::set(zt - m))[0];
  }
}

// Backward rows [r0, r1): raw dots → ∂L/∂dot in place. `scale` is grad_output / B; ignored rows get zero gradient.
inline void backward_rows(float* dots, std::int64_t r0, std::int64_t r1, const ChunkView& v,
                                     const float* lse, float scale) {
  const std::int64_t n = v.n;
  const float gs = scale * v.p.s;
  for (std::int64_t i = r0; i < r1; ++i) {
    float* row = dots + i * n;
    if (v.labels[i] < 0) {
      std::fill(row, row + n, 0.0f);
      continue;
    }
    const std::int64_t t = v.labels[i] - v.c0;
    const bool has_target = t >= 0 && t < n;
    const float raw_t = has_target ? row[t] * v.inv_norm[t] : 0.0f;
    softmax_grad(row, v.inv_norm, 0, n, v.p, lse[i], gs);
    if (has_target) {
      const float c = std::clamp(raw_t, -1.0f, 1.0f);
      const bool in_range = raw_t >= -1.0f && raw_t <= 1.0f;
      const float prob = S::exp(S::set(v.p.s * margin_target(v.p, c) - lse[i]))[0];
      row[t] = in_range ? (prob - 1.0f) * gs * margin_target_grad(v.p, c) * v.inv_norm[t] : 0.0f;
    }
  }
}

// ∂L/∂W_j from G_j = Σ_i ∂L/∂dot_ij · ê_i through w ↦ w / max(‖w‖, 1e-12): G_j − (G_j·w_j)·w_j / ‖w_j‖².
inline void normalize_backward_rows(float* grad, const float* w, const float* inv_norm, const float* norm,
                                               std::int64_t r0, std::int64_t r1, std::int64_t D) {
  for (std::int64_t r = r0; r < r1; ++r) {
    if (norm[r] < 1e-12f) continue;  // below eps the map is w / eps: identity up to the factor already applied
    float* g = grad + r * D;
    const float* x = w + r * D;
    auto acc0 = S::set(0.0f), acc1 = S::set(0.0f);
    std::int64_t k = 0;
    for (; k + 2 * W <= D; k += 2 * W) {
      acc0 += S::load(g + k) * S::load(x + k);
      acc1 += S::load(g + k + W) * S::load(x + k + W);
    }
    for (; k + W <= D; k += W) acc0 += S::load(g + k) * S::load(x + k);
    float dot = S::hsum(acc0 + acc1);
    for (; k < D; ++k) dot += g[k] * x[k];
    const float f = dot * inv_norm[r] * inv_norm[r];
    const auto fv = S::set(f);
    k = 0;
    for (; k + W <= D; k += W) S::store(g + k, S::load(g + k) - fv * S::load(x + k));
    for (; k < D; ++k) g[k] -= f * x[k];
  }
}

