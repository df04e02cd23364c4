#pragma once
// Overflow-checked size arithmetic for readers of untrusted files: a size a file declares is multiplied out and
// compared with the bytes actually present before anything is allocated.
#include <cstdint>
#include <limits>
#include <optional>
#include <type_traits>

namespace taxon {

// a * b, or nullopt when the product does not fit in T.
template <typename T>
constexpr std::optional<T> checked_mul(T a, T b) {
  static_assert(std::is_integral_v<T>);
  T out{};
  if (__builtin_mul_overflow(a, b, &out)) return std::nullopt;
  return out;
}

// a + b, or nullopt when the sum does not fit in T.
template <typename T>
constexpr std::optional<T> checked_add(T a, T b) {
  static_assert(std::is_integral_v<T>);
  T out{};
  if (__builtin_add_overflow(a, b, &out)) return std::nullopt;
  return out;
}

// The product of `dims` (1 for none), or nullopt on a negative dimension or when the product of the non-zero
// dimensions overflows T: such a shape is corrupt even if it also holds a 0 (its strides would overflow, and
// safetensors' own validation rejects it too).
template <typename T, typename Range>
constexpr std::optional<T> checked_product(const Range& dims) {
  T extent = 1;
  bool empty = false;
  for (const auto d : dims) {
    using D = std::remove_cv_t<decltype(d)>;
    if constexpr (std::is_signed_v<D>) {
      if (d < 0) return std::nullopt;
    }
    if (static_cast<std::make_unsigned_t<D>>(d) > static_cast<std::make_unsigned_t<T>>(std::numeric_limits<T>::max()))
      return std::nullopt;
    if (d == 0) {
      empty = true;
      continue;
    }
    const auto next = checked_mul<T>(extent, static_cast<T>(d));
    if (!next) return std::nullopt;
    extent = *next;
  }
  return empty ? T{0} : extent;
}

}  // namespace taxon
