#pragma once
// Margin policies: ArcFace, CosFace, SphereFace-style, and a true Combined margin, as small value types that
// PartialFC and the loss functions take as a template argument (concept MarginPolicy).
#include "taxon/core/error.hpp"
#include "taxon/core/options.hpp"
#include "taxon/loss/margin_math.hpp"

#include <cmath>
#include <concepts>
#include <string_view>

namespace taxon::loss {

enum class GradMode {
  straight_through,  // upstream ArcFace (deepglint/unicom unicom/partial_fc.py): margin added under no_grad
  exact,             // full chain rule through cos(m1·θ + m2)
};

template <typename M>
concept MarginPolicy = requires(const M& m) {
  { m.params() } -> std::same_as<MarginParams>;
  { M::name } -> std::convertible_to<std::string_view>;
};

namespace detail {
inline void check_common(double s, double filter) {
  TAXON_CHECK(s > 0 && std::isfinite(s), "loss.bad-margin", "scale s must be positive and finite, got ", s);
  TAXON_CHECK(filter >= 0 && filter <= 1, "loss.bad-margin", "interclass filtering threshold must be in [0, 1], got ",
              filter);
}
}  // namespace detail

struct ArcFaceOptions {
  ArcFaceOptions(double s = 64.0, double m2 = 0.5) : s_(s), m2_(m2) {}
  TAXON_ARG(double, s);
  TAXON_ARG(double, m2);
  TAXON_ARG(double, filter) = 0.0;
  TAXON_ARG(GradMode, grad_mode) = GradMode::straight_through;
};

// z_y = s·cos(θ_y + m2); straight-through gradient by default, as upstream.
struct ArcFace {
  static constexpr std::string_view name = "arcface";
  ArcFaceOptions options;
  ArcFace(ArcFaceOptions o = {}) : options(o) {  // NOLINT(google-explicit-constructor): ArcFace({32, 0.25})
    detail::check_common(o.s(), o.filter());
    TAXON_CHECK(o.m2() >= 0 && o.m2() < kPi, "loss.bad-margin", "ArcFace m2 must be in [0, pi), got ", o.m2());
  }
  ArcFace(double s, double m2) : ArcFace(ArcFaceOptions(s, m2)) {}
  MarginParams params() const {
    return {static_cast<float>(options.s()), 1.0f, static_cast<float>(options.m2()), 0.0f,
            static_cast<float>(options.filter()), options.grad_mode() == GradMode::exact};
  }
};

struct CosFaceOptions {
  CosFaceOptions(double s = 64.0, double m3 = 0.4) : s_(s), m3_(m3) {}
  TAXON_ARG(double, s);
  TAXON_ARG(double, m3);
  TAXON_ARG(double, filter) = 0.0;
};

// z_y = s·(cos θ_y − m3); the subtraction has an identity gradient, so there is no gradient mode.
struct CosFace {
  static constexpr std::string_view name = "cosface";
  CosFaceOptions options;
  CosFace(CosFaceOptions o = {}) : options(o) {  // NOLINT(google-explicit-constructor)
    detail::check_common(o.s(), o.filter());
    TAXON_CHECK(o.m3() >= 0 && o.m3() <= 2, "loss.bad-margin", "CosFace m3 must be in [0, 2], got ", o.m3());
  }
  CosFace(double s, double m3) : CosFace(CosFaceOptions(s, m3)) {}
  MarginParams params() const {
    return {static_cast<float>(options.s()), 1.0f, 0.0f, static_cast<float>(options.m3()),
            static_cast<float>(options.filter()), false};
  }
};

struct SphereFaceOptions {
  SphereFaceOptions(double s = 64.0, double m1 = 1.35) : s_(s), m1_(m1) {}
  TAXON_ARG(double, s);
  TAXON_ARG(double, m1);
  TAXON_ARG(double, filter) = 0.0;
  TAXON_ARG(GradMode, grad_mode) = GradMode::exact;  // no upstream implementation to match, so the true gradient
};

// z_y = s·cos(min(m1·θ_y, π)): the multiplicative angular margin, normalised-feature form (clamped, not the
// original piecewise ψ(θ) extension).
struct SphereFace {
  static constexpr std::string_view name = "sphereface";
  SphereFaceOptions options;
  SphereFace(SphereFaceOptions o = {}) : options(o) {  // NOLINT(google-explicit-constructor)
    detail::check_common(o.s(), o.filter());
    TAXON_CHECK(o.m1() >= 1 && o.m1() <= 8, "loss.bad-margin", "SphereFace m1 must be in [1, 8], got ", o.m1());
  }
  SphereFace(double s, double m1) : SphereFace(SphereFaceOptions(s, m1)) {}
  MarginParams params() const {
    return {static_cast<float>(options.s()), static_cast<float>(options.m1()), 0.0f, 0.0f,
            static_cast<float>(options.filter()), options.grad_mode() == GradMode::exact};
  }
};

struct CombinedOptions {
  CombinedOptions(double s = 64.0, double m1 = 1.0, double m2 = 0.5, double m3 = 0.0)
      : s_(s), m1_(m1), m2_(m2), m3_(m3) {}
  TAXON_ARG(double, s);
  TAXON_ARG(double, m1);
  TAXON_ARG(double, m2);
  TAXON_ARG(double, m3);
  TAXON_ARG(double, filter) = 0.0;
  TAXON_ARG(GradMode, grad_mode) = GradMode::exact;  // upstream raises for this case; we give the true gradient
};

// z_y = s·(cos(min(m1·θ_y + m2, π)) − m3): the paper's combined margin (upstream raises instead).
struct Combined {
  static constexpr std::string_view name = "combined";
  CombinedOptions options;
  Combined(CombinedOptions o = {}) : options(o) {  // NOLINT(google-explicit-constructor)
    detail::check_common(o.s(), o.filter());
    TAXON_CHECK(o.m1() >= 1 && o.m1() <= 8 && o.m2() >= 0 && o.m2() < kPi && o.m3() >= 0 && o.m3() <= 2,
                "loss.bad-margin", "Combined margin needs m1 in [1, 8], m2 in [0, pi), m3 in [0, 2]; got m1=", o.m1(),
                " m2=", o.m2(), " m3=", o.m3());
  }
  MarginParams params() const {
    return {static_cast<float>(options.s()), static_cast<float>(options.m1()), static_cast<float>(options.m2()),
            static_cast<float>(options.m3()), static_cast<float>(options.filter()),
            options.grad_mode() == GradMode::exact};
  }
};

static_assert(MarginPolicy<ArcFace> && MarginPolicy<CosFace> && MarginPolicy<SphereFace> && MarginPolicy<Combined>);

}  // namespace taxon::loss
