#pragma once
// Per-sample randomness: the engine every transform, shuffle and split draws from, and portable uniform draws
// (std::uniform_*_distribution differ between standard libraries, these do not).
#include <cstdint>
#include <random>

namespace taxon::data {

using Rng = std::mt19937_64;

// Uniform double in [0,1) from 53 random bits (portable, unlike std::uniform_real_distribution).
inline double uniform01(Rng& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }
inline double uniform(Rng& rng, double lo, double hi) { return lo + (hi - lo) * uniform01(rng); }
// Integer in [lo, hi) (hi > lo).
inline int64_t uniform_int(Rng& rng, int64_t lo, int64_t hi) {
  return lo + static_cast<int64_t>(uniform01(rng) * static_cast<double>(hi - lo));
}

}  // namespace taxon::data
