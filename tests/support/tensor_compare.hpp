#pragma once
// Tensor comparison for Catch2 that reports shape and max abs/rel error on failure, not just "false".
#include <catch2/catch.hpp>

#include <ATen/ATen.h>

#include <sstream>
#include <string>

namespace taxon::test {

struct TensorDiff {
  bool shapes_match = true;
  bool nan_mismatch = false;
  double max_abs = 0;
  double max_rel = 0;
  std::string describe() const {
    std::ostringstream s;
    if (!shapes_match) return "shape mismatch";
    s << "max_abs=" << max_abs << " max_rel=" << max_rel << (nan_mismatch ? " (NaN positions differ)" : "");
    return s.str();
  }
};

inline TensorDiff diff(const at::Tensor& actual, const at::Tensor& expected) {
  TensorDiff d;
  if (actual.sizes() != expected.sizes()) {
    d.shapes_match = false;
    return d;
  }
  if (actual.numel() == 0) return d;
  auto a = actual.detach().to(at::kCPU, at::kDouble);
  auto e = expected.detach().to(at::kCPU, at::kDouble);
  d.nan_mismatch = !at::equal(a.isnan(), e.isnan());
  auto finite = (a.isfinite() & e.isfinite());
  auto abs = (a - e).abs().masked_fill(~finite, 0);
  d.max_abs = abs.max().item<double>();
  d.max_rel = (abs / e.abs().clamp_min(1e-30)).masked_fill(~finite, 0).masked_fill(abs == 0, 0).max().item<double>();
  return d;
}

// Passes when |a-e| <= atol + rtol*|e| elementwise (allclose semantics) and shapes and NaNs agree.
inline bool allclose(const at::Tensor& actual, const at::Tensor& expected, double rtol, double atol) {
  if (actual.sizes() != expected.sizes()) return false;
  auto a = actual.detach().to(at::kCPU, at::kDouble);
  auto e = expected.detach().to(at::kCPU, at::kDouble);
  return at::allclose(a, e, rtol, atol, /*equal_nan=*/true);
}

}  // namespace taxon::test

// REQUIRE_TENSORS_CLOSE(actual, expected, rtol, atol): on failure prints shapes and the max error.
#define REQUIRE_TENSORS_CLOSE(actual, expected, rtol, atol)                                      \
  do {                                                                                           \
    const auto& taxon_a_ = (actual);                                                             \
    const auto& taxon_e_ = (expected);                                                           \
    INFO(#actual " vs " #expected ": sizes " << taxon_a_.sizes() << " vs " << taxon_e_.sizes()   \
                 << ", " << ::taxon::test::diff(taxon_a_, taxon_e_).describe());                 \
    REQUIRE(::taxon::test::allclose(taxon_a_, taxon_e_, (rtol), (atol)));                         \
  } while (false)

#define CHECK_TENSORS_CLOSE(actual, expected, rtol, atol)                                        \
  do {                                                                                           \
    const auto& taxon_a_ = (actual);                                                             \
    const auto& taxon_e_ = (expected);                                                           \
    INFO(#actual " vs " #expected ": sizes " << taxon_a_.sizes() << " vs " << taxon_e_.sizes()   \
                 << ", " << ::taxon::test::diff(taxon_a_, taxon_e_).describe());                 \
    CHECK(::taxon::test::allclose(taxon_a_, taxon_e_, (rtol), (atol)));                           \
  } while (false)

// REQUIRE_TAXON_ERROR(expr, "area.id"): expr must throw taxon::Error with exactly that id.
#define REQUIRE_TAXON_ERROR(expr, expected_id)                                                   \
  do {                                                                                           \
    bool taxon_threw_ = false;                                                                   \
    try {                                                                                        \
      (void)(expr);                                                                              \
    } catch (const ::taxon::Error& taxon_err_) {                                                 \
      taxon_threw_ = true;                                                                       \
      INFO("message: " << taxon_err_.what());                                                    \
      REQUIRE(taxon_err_.id() == std::string(expected_id));                                      \
    }                                                                                            \
    INFO(#expr " should throw taxon::Error " << expected_id);                                    \
    REQUIRE(taxon_threw_);                                                                       \
  } while (false)
