#pragma once
// The scalar margin arithmetic shared by the reference, the fused CPU kernel and the CUDA kernel.
// Plain C++17 with no LibTorch so nvcc compiles it inside include/taxon/cuda/*.cuh.
#include <cmath>

#if defined(__CUDACC__)
#define TAXON_HOST_DEVICE __host__ __device__
#else
#define TAXON_HOST_DEVICE
#endif

namespace taxon::loss {

// Runtime form of every margin policy: target logit z_y = s·(cos(min(m1·θ + m2, π)) − m3), others z_j = s·cos_j.
struct MarginParams {
  float s = 64.0f;
  float m1 = 1.0f;
  float m2 = 0.0f;
  float m3 = 0.0f;
  float filter = 0.0f;  // inter-class filtering threshold; 0 = off (upstream: active only when > 0)
  bool exact = false;   // exact chain-rule gradient through the target margin; false = straight-through
};

inline constexpr double kPi = 3.14159265358979323846;

// True when the target transform involves the angle (ArcFace, SphereFace, Combined) rather than a plain shift.
TAXON_HOST_DEVICE inline bool is_angular(const MarginParams& p) { return p.m1 != 1.0f || p.m2 != 0.0f; }

// Target value before scaling. θ' = m1·θ + m2 is clamped at π: beyond it cos(θ') would rise again and reward a
// worse angle, so the target sits at −1 (the most penalised value) with zero exact gradient there.
template <typename T>
TAXON_HOST_DEVICE inline T margin_target(const MarginParams& p, T c) {
  if (!is_angular(p)) return c - static_cast<T>(p.m3);
  T phi = static_cast<T>(p.m1) * std::acos(c) + static_cast<T>(p.m2);
  if (phi > static_cast<T>(kPi)) phi = static_cast<T>(kPi);
  return std::cos(phi) - static_cast<T>(p.m3);
}

// d margin_target / dc. Straight-through (upstream ArcFace) is 1; exact is m1·sin(θ')/sin(θ), 0 past the clamp.
template <typename T>
TAXON_HOST_DEVICE inline T margin_target_grad(const MarginParams& p, T c) {
  if (!p.exact || !is_angular(p)) return T(1);
  const T theta = std::acos(c);
  const T phi = static_cast<T>(p.m1) * theta + static_cast<T>(p.m2);
  if (phi > static_cast<T>(kPi)) return T(0);
  const T sin_theta = std::sqrt(T(1) - c * c);  // = sin(acos(c)); singular at c = ±1 exactly, like d acos/dc
  return static_cast<T>(p.m1) * std::sin(phi) / sin_theta;
}

// Non-target cosines above the threshold are zeroed (cos = 0) and get no gradient (upstream semantics).
TAXON_HOST_DEVICE inline bool is_filtered(const MarginParams& p, float c) { return p.filter > 0.0f && c > p.filter; }

}  // namespace taxon::loss
