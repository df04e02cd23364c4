#pragma once
// Ready-made preprocessing of the published models (OpenAI CLIP / open_clip, timm / UNICOM) and of small-image
// demos, with their normalisation statistics. Each is a Compose of steps from transforms.hpp.
#include "taxon/data/transforms.hpp"

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

namespace taxon::data {

inline const std::vector<double> kClipMean{0.48145466, 0.4578275, 0.40821073};
inline const std::vector<double> kClipStd{0.26862954, 0.26130258, 0.27577711};
inline const std::vector<double> kImageNetMean{0.485, 0.456, 0.406};
inline const std::vector<double> kImageNetStd{0.229, 0.224, 0.225};

// OpenAI CLIP / open_clip eval preprocessing: Resize(res, bicubic) on the shorter side, CenterCrop(res), RGB,
// ToTensor, Normalize(CLIP mean/std). uint8 [H,W,3] -> float [3,res,res].
inline Compose clip_eval(int64_t resolution = 224) {
  return Compose{resize_center_crop(resolution, resolution), normalize(kClipMean, kClipStd)};
}

// timm/UNICOM eval: resize shorter side to floor(res / crop_pct), center crop res; crop_pct = 224/256 when
// res <= 224 else 1.0 (crop_pct <= 0 selects that default).
inline Compose timm_eval(int64_t resolution = 224, double crop_pct = 0.0, const std::vector<double>& mean = kClipMean,
                         const std::vector<double>& stdev = kClipStd) {
  if (crop_pct <= 0) crop_pct = resolution <= 224 ? 224.0 / 256.0 : 1.0;
  const auto scaled = static_cast<int64_t>(std::floor(static_cast<double>(resolution) / crop_pct));
  return Compose{resize_center_crop(scaled, resolution), normalize(mean, stdev)};
}

// Training augmentation: RandomResizedCrop(res, bicubic) + horizontal flip (+ optional colour jitter) + normalize.
inline Compose clip_train(int64_t resolution = 224, double jitter = 0.0, std::pair<double, double> scale = {0.08, 1.0}) {
  Compose c{random_resized_crop(resolution, scale), horizontal_flip(0.5)};
  if (jitter > 0) c.then(color_jitter(jitter, jitter, jitter));
  c.then(normalize(kClipMean, kClipStd));
  return c;
}

// Small images (CPU demos, Fashion-MNIST 28x28): resize to size x size (skipped when already that size) and
// normalize with the given statistics; no 224 anywhere.
inline Compose small_image(int64_t size, std::vector<double> mean, std::vector<double> stdev, bool flip = false) {
  Compose c;
  c.then([size](const at::Tensor& img, Rng&) {
    detail::check_hwc_u8(img, "small_image");
    return (img.size(0) == size && img.size(1) == size) ? img : resize_bicubic(img, size, size);
  });
  if (flip) c.then(horizontal_flip(0.5));
  c.then(normalize(mean, stdev));
  return c;
}

}  // namespace taxon::data
