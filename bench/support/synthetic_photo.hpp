#pragma once
// Photo-like synthetic pictures for the GPU benchmarks and gpu-check's main job: smooth colour waves whose phases and
// frequencies come from the class, plus per-image shifts and sensor noise, so JPEG sizes and decode costs resemble
// real photos and images of one class look alike.
#include "taxon/core/seed.hpp"

#include <ATen/ATen.h>

#include <cstdint>

namespace taxon::bench {

inline at::Tensor synthetic_photo(std::int64_t h, std::int64_t w, std::uint64_t class_seed, std::uint64_t image_seed) {
  auto class_gen = taxon::make_generator(class_seed, {0xC1A55ULL});
  auto image_gen = taxon::make_generator(image_seed, {0x1A6EULL});
  const at::Tensor ys = at::linspace(0, 1, h).view({h, 1, 1}), xs = at::linspace(0, 1, w).view({1, w, 1});
  const at::Tensor phase = at::rand({1, 1, 3}, class_gen) * 6.28 + at::rand({1, 1, 3}, image_gen) * 0.5;
  const at::Tensor freq = at::rand({1, 1, 3}, class_gen) * 8 + 1;
  at::Tensor img = 127.5 + 80 * at::sin(freq * (xs + ys * 0.7) + phase) + 30 * at::cos(freq * 2 * ys + phase);
  img = img + 12 * at::randn({h, w, 3}, image_gen);
  return img.clamp(0, 255).to(at::kByte).contiguous();
}

}  // namespace taxon::bench
