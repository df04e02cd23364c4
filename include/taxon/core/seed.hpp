#pragma once
// Seeding: one call seeds every generator taxon touches, and derive_seed() gives independent,
// reproducible streams per (seed, epoch, index) so results never depend on worker count or timing.
#include <ATen/core/Generator.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>

#include <cstdint>
#include <initializer_list>
#include <random>

namespace taxon {

// SplitMix64 finaliser: a cheap bijective mixer with good avalanche, used to combine seed components.
constexpr std::uint64_t mix64(std::uint64_t x) noexcept {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

constexpr std::uint64_t derive_seed(std::uint64_t seed, std::initializer_list<std::uint64_t> parts) noexcept {
  std::uint64_t h = mix64(seed);
  for (auto p : parts) h = mix64(h ^ mix64(p + 0x632BE59BD9B4E019ULL));
  return h;
}

// A fresh CPU generator for one (seed, parts...) stream.
inline at::Generator make_generator(std::uint64_t seed, std::initializer_list<std::uint64_t> parts = {}) {
  return at::make_generator<at::CPUGeneratorImpl>(derive_seed(seed, parts));
}

inline std::mt19937_64 make_engine(std::uint64_t seed, std::initializer_list<std::uint64_t> parts = {}) {
  return std::mt19937_64(derive_seed(seed, parts));
}

// Seeds LibTorch's default CPU generator (and CUDA's, when present) for code that draws from the globals.
inline void seed_everything(std::uint64_t seed) {
  at::Generator gen = at::detail::getDefaultCPUGenerator();
  {
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_current_seed(seed);
  }
  if (at::hasCUDA()) {
    at::Generator cuda_gen = at::globalContext().defaultGenerator(at::DeviceType::CUDA);
    cuda_gen.set_current_seed(seed);
  }
}

}  // namespace taxon
