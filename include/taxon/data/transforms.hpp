#pragma once
// Image transforms on uint8 HWC tensors and their composition. A transform is any callable
// (image, rng) -> image; each draws its randomness from a per-sample engine seeded by derive_seed(seed, {epoch,
// index}), so results never depend on worker count or timing. Every resize is PIL-exact (resample.hpp); ready-made
// pipelines (clip_eval, timm_eval, clip_train, small_image) are in presets.hpp.
#include "taxon/core/cpu.hpp"
#include "taxon/core/error.hpp"
#include "taxon/core/seed.hpp"
#include "taxon/data/box.hpp"
#include "taxon/data/random.hpp"
#include "taxon/data/resample.hpp"

#include <ATen/ATen.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace taxon::data {

// A transform maps an image tensor to an image tensor, drawing any randomness from the sample's engine.
using TransformFn = std::function<at::Tensor(const at::Tensor&, Rng&)>;

// Steps: uint8 HWC -> uint8 HWC unless noted.

// Resize the shorter side to `size` (bicubic, PIL-exact).
inline TransformFn resize_shortest(int64_t size) {
  return [size](const at::Tensor& img, Rng&) {
    detail::check_hwc_u8(img, "resize_shortest");
    const auto [h, w] = shortest_side_size(img.size(0), img.size(1), size);
    return resize_bicubic(img, h, w);
  };
}

// Resize to exactly height x width (bicubic, PIL-exact); e.g. 28x28 Fashion-MNIST -> 32x32.
inline TransformFn resize(int64_t height, int64_t width) {
  return [height, width](const at::Tensor& img, Rng&) { return resize_bicubic(img, height, width); };
}

inline TransformFn center_crop(int64_t height, int64_t width) {
  return [height, width](const at::Tensor& img, Rng&) {
    detail::check_hwc_u8(img, "center_crop");
    TAXON_CHECK(img.size(0) >= height && img.size(1) >= width, "data.bad-box", "center_crop ", height, "x", width,
                " larger than the ", img.size(0), "x", img.size(1), " image");
    const int64_t top = center_offset(img.size(0), height), left = center_offset(img.size(1), width);
    return img.slice(0, top, top + height).slice(1, left, left + width).contiguous();
  };
}

// Resize shorter side to `resize_to`, then center crop crop x crop — fused: only the kept pixels are computed,
// bit-identical to resize_shortest followed by center_crop. A named step, so a Loader can find it at the head of
// a transform (split_leading_crop) and ask the dataset for the crop instead of the image (DecodeRequest).
struct ResizeCenterCrop {
  int64_t resize_to = 0, crop = 0;
  // The resized size of an H x W image and the crop window in it (shared with decode_resize_center_crop).
  struct Plan {
    int64_t out_h, out_w;
    Box window;
  };
  Plan plan(int64_t H, int64_t W, const std::string& what) const {
    const auto [h, w] = shortest_side_size(H, W, resize_to);
    TAXON_CHECK(h >= crop && w >= crop, "data.bad-box", what, ": crop ", crop, " larger than the resized ", h, "x", w,
                " image");
    return {h, w, Box{center_offset(h, crop), center_offset(w, crop), crop, crop}};
  }
  at::Tensor apply(const at::Tensor& img) const {
    detail::check_hwc_u8(img, "resize_center_crop");
    const Plan p = plan(img.size(0), img.size(1), "resize_center_crop");
    return resize_bicubic(img, p.out_h, p.out_w, {}, p.window);
  }
  at::Tensor operator()(const at::Tensor& img, Rng&) const { return apply(img); }
};
inline TransformFn resize_center_crop(int64_t resize_to, int64_t crop) { return ResizeCenterCrop{resize_to, crop}; }

namespace detail {
// ToTensor + Normalize as one multiply and one subtract per value, v * scale[c] - shift[c] in float, with
// scale = 1 / (255 std) and shift = mean / std: the CPU kernels and normalize_batch share these constants.
struct NormalizeConstants {
  std::vector<float> scale, shift;
};
inline NormalizeConstants normalize_constants(const std::vector<double>& mean, const std::vector<double>& stdev) {
  TAXON_CHECK(mean.size() == stdev.size() && !mean.empty(), "data.bad-normalize", "mean has ", mean.size(),
              " values but std has ", stdev.size());
  NormalizeConstants k;
  for (std::size_t c = 0; c < mean.size(); ++c) {
    TAXON_CHECK(stdev[c] > 0, "data.bad-normalize", "std[", c, "] is ", stdev[c], "; it must be positive");
    k.scale.push_back(static_cast<float>(1.0 / (255.0 * stdev[c])));
    k.shift.push_back(static_cast<float>(mean[c] / stdev[c]));
  }
  return k;
}

// `out` when it is a contiguous CPU tensor of exactly this shape and dtype (a caller's slot), else a new tensor.
inline at::Tensor output_or_new(const at::Tensor& out, at::IntArrayRef shape, at::ScalarType dtype) {
  if (out.defined() && out.sizes() == shape && out.scalar_type() == dtype && out.is_contiguous() && out.device().is_cpu())
    return out;
  return at::empty(shape, dtype);
}
}  // namespace detail

// Steps that may end a transform and write into a caller's tensor (Normalize, ToChw) have a second call form,
// step(image, rng, out): the output goes into `out` when `out` fits it exactly (apply_into), else into a new tensor.

// uint8 [H,W,C] -> float32 [C,H,W] in [0,1], then (x - mean) / std per channel (ToTensor + Normalize).
// A 1-channel image with 3-channel statistics is replicated to RGB (grayscale -> RGB).
class Normalize {
 public:
  Normalize(const std::vector<double>& mean, const std::vector<double>& stdev)
      : k_(detail::normalize_constants(mean, stdev)) {}
  at::Tensor operator()(const at::Tensor& image, Rng& rng) const { return (*this)(image, rng, at::Tensor()); }
  at::Tensor operator()(const at::Tensor& image, Rng&, const at::Tensor& out) const {
    detail::check_hwc_u8(image, "normalize");
    const at::Tensor img = image.contiguous();
    const int64_t H = img.size(0), W = img.size(1), C = img.size(2), OC = static_cast<int64_t>(k_.scale.size());
    TAXON_CHECK(C == OC || C == 1, "data.bad-normalize", "normalize has ", OC, " channel statistics but the image has ",
                C, " channels");
    at::Tensor result = detail::output_or_new(out, {OC, H, W}, at::kFloat);
    const uint8_t* src = img.data_ptr<uint8_t>();
    float* dst = result.data_ptr<float>();
    const int64_t plane = H * W;
    int64_t done = 0;  // pixels the SIMD kernel has written
#if defined(TAXON_SIMD_X86_DISPATCH)
    if (C == 3 && OC == 3 && taxon::cpu::active_at_least(taxon::cpu::Isa::avx2)) {
      float* const planes[3] = {dst, dst + plane, dst + 2 * plane};
      done = detail::normalize_rgb_avx2(src, plane, planes, k_.scale.data(), k_.shift.data());
    }
#endif
    for (int64_t c = 0; c < OC; ++c) {
      const float scale = k_.scale[static_cast<size_t>(c)], shift = k_.shift[static_cast<size_t>(c)];
      const int64_t sc = C == 1 ? 0 : c;
      float* d = dst + c * plane;
      for (int64_t p = done; p < plane; ++p) d[p] = static_cast<float>(src[p * C + sc]) * scale - shift;
    }
    return result;
  }

 private:
  detail::NormalizeConstants k_;
};
inline TransformFn normalize(const std::vector<double>& mean, const std::vector<double>& stdev) {
  return Normalize(mean, stdev);
}

// uint8 [H,W,C] -> uint8 [C,H,W]: ToTensor's layout without its scaling, for batches that are normalised on the
// device (normalize_batch) and so cross PCIe at a quarter of float32's size. `channels` 3 turns grey into RGB.
class ToChw {
 public:
  explicit ToChw(int64_t channels = 0) : channels_(channels) {
    TAXON_CHECK(channels >= 0, "data.bad-option", "to_chw channels must be >= 0, got ", channels);
  }
  at::Tensor operator()(const at::Tensor& image, Rng& rng) const { return (*this)(image, rng, at::Tensor()); }
  at::Tensor operator()(const at::Tensor& image, Rng&, const at::Tensor& out) const {
    detail::check_hwc_u8(image, "to_chw");
    const at::Tensor img = image.contiguous();
    const int64_t H = img.size(0), W = img.size(1), C = img.size(2), OC = channels_ == 0 ? C : channels_;
    TAXON_CHECK(C == OC || C == 1, "data.bad-image", "to_chw to ", OC, " channels needs a ", OC,
                "- or 1-channel image, got ", C, " channels");
    at::Tensor result = detail::output_or_new(out, {OC, H, W}, at::kByte);
    const uint8_t* src = img.data_ptr<uint8_t>();
    uint8_t* dst = result.data_ptr<uint8_t>();
    const int64_t plane = H * W;
    int64_t done = 0;
#if defined(TAXON_SIMD_X86_DISPATCH)
    if (C == 3 && taxon::cpu::active_at_least(taxon::cpu::Isa::avx2)) {
      uint8_t* const planes[3] = {dst, dst + plane, dst + 2 * plane};
      done = detail::deinterleave_rgb_avx2(src, plane, planes);
    }
#endif
    for (int64_t c = 0; c < OC; ++c) {
      const int64_t sc = C == 1 ? 0 : c;
      uint8_t* d = dst + c * plane;
      for (int64_t p = done; p < plane; ++p) d[p] = src[p * C + sc];
    }
    return result;
  }

 private:
  int64_t channels_;
};
inline TransformFn to_chw(int64_t channels = 0) { return ToChw(channels); }

// normalize() for a batch of to_chw() outputs, on whatever device the batch is on: uint8 [B,C,H,W] -> float32,
// v * (1 / (255 std)) - mean / std with the same float constants and operation order, so it equals normalize()
// bit for bit.
inline at::Tensor normalize_batch(const at::Tensor& images, const std::vector<double>& mean,
                                  const std::vector<double>& stdev) {
  const auto k = detail::normalize_constants(mean, stdev);
  const auto C = static_cast<int64_t>(k.scale.size());
  TAXON_CHECK(images.dim() == 4 && images.scalar_type() == at::kByte && images.size(1) == C, "data.bad-normalize",
              "normalize_batch expects a [B,", C, ",H,W] uint8 batch, got ", images.sizes(), " ", images.scalar_type());
  const auto on_device = [&](const std::vector<float>& v) {
    return at::tensor(v, at::kFloat).view({1, C, 1, 1}).to(images.device());
  };
  return images.to(at::kFloat).mul_(on_device(k.scale)).sub_(on_device(k.shift));
}

// normalize_batch as the step TrainerOptions::device_transform / EmbedOptions::device_transform apply to each uint8
// to_chw() batch once it is on the device. The statistics are checked here, before any batch arrives.
inline std::function<at::Tensor(const at::Tensor&)> normalize_on_device(std::vector<double> mean,
                                                                         std::vector<double> stdev) {
  detail::normalize_constants(mean, stdev);
  return [mean = std::move(mean), stdev = std::move(stdev)](const at::Tensor& images) {
    return normalize_batch(images, mean, stdev);
  };
}

inline TransformFn horizontal_flip(double p = 0.5) {
  return [p](const at::Tensor& img, Rng& rng) {
    detail::check_hwc_u8(img, "horizontal_flip");
    return uniform01(rng) < p ? img.flip({1}).contiguous() : img;
  };
}

// torchvision RandomResizedCrop.get_params: 10 tries of (area scale, log-uniform aspect ratio), then the
// central-crop fallback; the chosen box is resized to size x size with the PIL bicubic kernel.
inline Box random_resized_crop_box(int64_t height, int64_t width, Rng& rng, std::pair<double, double> scale,
                                   std::pair<double, double> ratio) {
  const double area = static_cast<double>(height * width);
  const double log_lo = std::log(ratio.first), log_hi = std::log(ratio.second);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * uniform(rng, scale.first, scale.second);
    const double aspect = std::exp(uniform(rng, log_lo, log_hi));
    const auto w = static_cast<int64_t>(std::nearbyint(std::sqrt(target_area * aspect)));
    const auto h = static_cast<int64_t>(std::nearbyint(std::sqrt(target_area / aspect)));
    if (w > 0 && w <= width && h > 0 && h <= height)
      return Box{uniform_int(rng, 0, height - h + 1), uniform_int(rng, 0, width - w + 1), h, w};
  }
  const double in_ratio = static_cast<double>(width) / static_cast<double>(height);
  int64_t w = width, h = height;
  if (in_ratio < ratio.first) h = static_cast<int64_t>(std::nearbyint(static_cast<double>(w) / ratio.first));
  else if (in_ratio > ratio.second) w = static_cast<int64_t>(std::nearbyint(static_cast<double>(h) * ratio.second));
  return Box{(height - h) / 2, (width - w) / 2, h, w};
}

inline TransformFn random_resized_crop(int64_t size, std::pair<double, double> scale = {0.08, 1.0},
                                       std::pair<double, double> ratio = {3.0 / 4.0, 4.0 / 3.0}) {
  return [=](const at::Tensor& img, Rng& rng) {
    detail::check_hwc_u8(img, "random_resized_crop");
    const Box box = random_resized_crop_box(img.size(0), img.size(1), rng, scale, ratio);
    return resize_bicubic(img, size, size, box);
  };
}

// Brightness, contrast and saturation factors drawn uniformly from [1-x, 1+x], applied in a random order
// (PIL ImageEnhance semantics: blend with black, with the mean grey level, with the greyscale image).
inline TransformFn color_jitter(double brightness, double contrast = 0.0, double saturation = 0.0) {
  return [=](const at::Tensor& image, Rng& rng) {
    detail::check_hwc_u8(image, "color_jitter");
    std::array<int, 3> order{0, 1, 2};
    for (int i = 2; i > 0; --i) std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(uniform_int(rng, 0, i + 1))]);
    const std::array<double, 3> amount{brightness, contrast, saturation};
    std::array<double, 3> factor{1.0, 1.0, 1.0};
    for (int i = 0; i < 3; ++i)
      if (amount[static_cast<size_t>(i)] > 0)
        factor[static_cast<size_t>(i)] = uniform(rng, std::max(0.0, 1.0 - amount[static_cast<size_t>(i)]), 1.0 + amount[static_cast<size_t>(i)]);
    at::Tensor x = image.to(at::kFloat);
    const bool rgb = x.size(2) == 3;
    const auto grey = [&](const at::Tensor& t) {
      return rgb ? (t.select(2, 0) * 0.299 + t.select(2, 1) * 0.587 + t.select(2, 2) * 0.114).unsqueeze(2) : t;
    };
    for (int op : order) {
      const double f = factor[static_cast<size_t>(op)];
      if (f == 1.0) continue;
      if (op == 0) x = x * f;
      else if (op == 1) x = (x - grey(x).mean()) * f + grey(x).mean();
      else x = (x - grey(x)) * f + grey(x);
      x = x.clamp(0, 255);
    }
    return x.round().to(at::kByte);
  };
}

// A sequence of transforms applied in order.
class Compose {
 public:
  Compose() = default;
  Compose(std::initializer_list<TransformFn> steps) : steps_(steps) {}
  explicit Compose(std::vector<TransformFn> steps) : steps_(std::move(steps)) {}
  Compose& then(TransformFn step) {
    steps_.push_back(std::move(step));
    return *this;
  }
  at::Tensor operator()(const at::Tensor& image, Rng& rng) const {
    at::Tensor x = image;
    for (const auto& s : steps_) x = s(x, rng);
    return x;
  }
  // The same, with the last step writing into `out` when it can (apply_into).
  at::Tensor operator()(const at::Tensor& image, Rng& rng, const at::Tensor& out) const;
  // Deterministic application for one sample: engine from derive_seed(seed, {epoch, index}).
  at::Tensor apply(const at::Tensor& image, uint64_t seed, uint64_t epoch, uint64_t index) const {
    Rng rng = make_engine(seed, {epoch, index});
    return (*this)(image, rng);
  }
  std::size_t size() const noexcept { return steps_.size(); }
  bool empty() const noexcept { return steps_.empty(); }
  const std::vector<TransformFn>& steps() const noexcept { return steps_; }

 private:
  std::vector<TransformFn> steps_;
};

// transform(image, rng), except that the final step writes its output straight into `out` (the Loader passes the
// sample's slot of the batch) when that step can — normalize, to_chw, or a Compose ending in one — and `out` is
// a contiguous CPU tensor of exactly the output's shape and dtype. The result then shares `out`'s memory;
// otherwise it is a new tensor and `out` is left untouched. The values are the same either way.
inline at::Tensor apply_into(const TransformFn& transform, const at::Tensor& image, Rng& rng, const at::Tensor& out) {
  if (const auto* compose = transform.target<Compose>()) return (*compose)(image, rng, out);
  if (const auto* step = transform.target<Normalize>()) return (*step)(image, rng, out);
  if (const auto* step = transform.target<ToChw>()) return (*step)(image, rng, out);
  return transform(image, rng);
}

inline at::Tensor Compose::operator()(const at::Tensor& image, Rng& rng, const at::Tensor& out) const {
  if (steps_.empty()) return image;
  at::Tensor x = image;
  for (std::size_t i = 0; i + 1 < steps_.size(); ++i) x = steps_[i](x, rng);
  return apply_into(steps_.back(), x, rng, out);
}

// A transform whose first step is resize_center_crop, as that step and the rest (empty: nothing left to do),
// so the crop can happen while decoding; `crop` is empty when the transform does not start with one.
struct LeadingCrop {
  std::optional<ResizeCenterCrop> crop;
  TransformFn rest;
};
inline LeadingCrop split_leading_crop(const TransformFn& transform) {
  if (!transform) return {};
  if (const auto* step = transform.target<ResizeCenterCrop>()) return {*step, TransformFn()};
  const auto* compose = transform.target<Compose>();
  if (compose == nullptr || compose->empty()) return {};
  LeadingCrop head = split_leading_crop(compose->steps().front());
  if (!head.crop) return {};
  std::vector<TransformFn> rest;
  if (head.rest) rest.push_back(head.rest);
  rest.insert(rest.end(), compose->steps().begin() + 1, compose->steps().end());
  return {head.crop, rest.empty() ? TransformFn() : TransformFn(Compose(std::move(rest)))};
}

// Applies a transform to a batch: [B,H,W,C] uint8 (or a list of [H,W,C]) -> stacked outputs, e.g. [B,3,224,224].
inline at::Tensor apply_batch(const TransformFn& transform, const at::Tensor& images, uint64_t seed = 0) {
  TAXON_CHECK(images.dim() == 4, "data.bad-image", "apply_batch expects [B,H,W,C], got ", images.sizes());
  std::vector<at::Tensor> outs;
  outs.reserve(static_cast<size_t>(images.size(0)));
  for (int64_t i = 0; i < images.size(0); ++i) {
    Rng rng = make_engine(seed, {0, static_cast<uint64_t>(i)});
    outs.push_back(transform(images[i], rng));
  }
  return at::stack(outs);
}
inline at::Tensor apply_batch(const TransformFn& transform, const std::vector<at::Tensor>& images, uint64_t seed = 0) {
  std::vector<at::Tensor> outs;
  outs.reserve(images.size());
  for (size_t i = 0; i < images.size(); ++i) {
    Rng rng = make_engine(seed, {0, static_cast<uint64_t>(i)});
    outs.push_back(transform(images[i], rng));
  }
  return at::stack(outs);
}

}  // namespace taxon::data
