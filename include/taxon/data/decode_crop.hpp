#pragma once
// Decode fused with CLIP's resize + center crop: only the pixels the crop reads are decoded (a landscape photo
// resized to 224 and center-cropped reads ~3/4 of its columns). As in CLIP's _transform on a PIL image, the resize
// happens in the file's own mode (image_mode.hpp) and the crop is converted to RGB last, so every mode gives
// Pillow's result; the result is bit-identical to resize_center_crop(open_image(...), ...) on the full decode.
// Image datasets use it to answer a Loader's DecodeRequest (decode_request.hpp), or for every image with the
// decode_resize_crop option.
#include "taxon/data/decode.hpp"
#include "taxon/data/resample.hpp"
#include "taxon/data/transforms.hpp"

#include <algorithm>
#include <string>
#include <string_view>

namespace taxon::data {

namespace detail {

// Rows and columns of an in_h x in_w source that resizing it to out_h x out_w reads for the output `window`.
inline Box resize_support(int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w, const Box& window) {
  const auto span = [](int64_t in, int64_t out, int64_t begin, int64_t n) -> std::pair<int64_t, int64_t> {
    if (in == out) return {begin, begin + n};
    return input_span(cached_coeffs(in, out, begin, n)->coeffs);
  };
  const auto [r0, r1] = span(in_h, out_h, window.top, window.height);
  const auto [c0, c1] = span(in_w, out_w, window.left, window.width);
  return Box{r0, c0, r1 - r0, c1 - c0};
}

// Pillow's Image.resize(BICUBIC) of an image held in `mode`, then convert("RGB") of the output pixels in
// `window`; arguments as resize_core. Modes "1" and "P" resize with nearest neighbour, "LA" and "RGBA" with the
// colour premultiplied by alpha (Image.resize converts to "La"/"RGBa" and back), "I" in 32-bit integers, "CMYK"
// as 4 plain channels. An image already of the output size is not resampled (Image.resize returns a copy).
inline at::Tensor resize_window_to_rgb(const at::Tensor& img, PilMode mode, int64_t vy, int64_t vx, int64_t in_h,
                                       int64_t in_w, int64_t out_h, int64_t out_w, Box window) {
  check_mode_layout(img, mode);
  if (out_h == in_h && out_w == in_w) {
    TAXON_CHECK(window.top - vy >= 0 && window.left - vx >= 0 && window.top + window.height - vy <= img.size(0) &&
                    window.left + window.width - vx <= img.size(1),
                "data.bad-box", "crop window outside the ", img.size(0), "x", img.size(1), " buffer");
    return pil_to_rgb(img.slice(0, window.top - vy, window.top + window.height - vy)
                          .slice(1, window.left - vx, window.left + window.width - vx)
                          .contiguous(),
                      mode);
  }
  switch (mode) {
    case PilMode::rgb:
    case PilMode::l: return resize_core(img, vy, vx, in_h, in_w, out_h, out_w, window);
    case PilMode::bilevel:
    case PilMode::p: return resize_core_nearest(img.contiguous(), vy, vx, in_h, in_w, out_h, out_w, window);
    case PilMode::cmyk: return pil_to_rgb(resize_core(img.contiguous(), vy, vx, in_h, in_w, out_h, out_w, window), mode);
    case PilMode::i: return pil_to_rgb(resize_core_i32(img.contiguous(), vy, vx, in_h, in_w, out_h, out_w, window), mode);
    case PilMode::la:
    case PilMode::rgba: break;
  }
  // Pillow's rgbA2rgba / lA2la, the resize, then rgba2rgbA / la2lA: colour * alpha / 255 rounded, and back as
  // 255 * colour / alpha truncated (left as is where alpha is 0 or 255).
  const int64_t C = img.size(2);
  at::Tensor pre = img.contiguous().clone();
  uint8_t* p = pre.data_ptr<uint8_t>();
  for (int64_t k = 0, n = pre.size(0) * pre.size(1); k < n; ++k) {
    const uint32_t alpha = p[k * C + C - 1];
    for (int64_t c = 0; c + 1 < C; ++c) p[k * C + c] = static_cast<uint8_t>(muldiv255(p[k * C + c], alpha));
  }
  at::Tensor resized = resize_core(pre, vy, vx, in_h, in_w, out_h, out_w, window).clone();
  uint8_t* r = resized.data_ptr<uint8_t>();
  for (int64_t k = 0, n = resized.size(0) * resized.size(1); k < n; ++k) {
    const int64_t alpha = r[k * C + C - 1];
    if (alpha == 0 || alpha == 255) continue;
    for (int64_t c = 0; c + 1 < C; ++c) r[k * C + c] = clamp_u8(255 * static_cast<int64_t>(r[k * C + c]) / alpha);
  }
  return pil_to_rgb(resized, mode);
}

}  // namespace detail

// CLIP's Resize(resize_to) + CenterCrop(crop) + convert("RGB") of an opened image (open_image), resizing in its
// own mode as PIL does: [crop, crop, 3] uint8. For RGB and L images this is rc.apply(image.to_rgb()).
inline at::Tensor resize_center_crop(const DecodedImage& image, const ResizeCenterCrop& rc) {
  detail::check_mode_layout(image.pixels, image.mode);
  const int64_t H = image.pixels.size(0), W = image.pixels.size(1);
  const ResizeCenterCrop::Plan plan = rc.plan(H, W, "resize_center_crop");
  return detail::resize_window_to_rgb(image.pixels.contiguous(), image.mode, 0, 0, H, W, plan.out_h, plan.out_w,
                                      plan.window);
}

// A dataset option: decode every image straight to resize_center_crop(resize_to, crop) — CLIP eval's first step,
// e.g. {224, 224} — reading only the pixels the crop needs; bit-identical to decoding in full and then cropping.
// {0, 0} = off. Inside a Loader this is not needed: the Loader asks for the crop its transform starts with.
struct DecodeResizeCrop {
  std::int64_t resize_to = 0, crop = 0;
  bool enabled() const { return resize_to > 0 && crop > 0; }
};

// resize_center_crop(open_image(bytes), {resize_to, crop}) of an encoded JPEG or PNG, decoding only what the crop
// needs (the bicubic support: JPEGs are RGB, L or CMYK; the nearest-neighbour modes are PNGs, decoded whole).
inline at::Tensor decode_resize_center_crop(std::string_view bytes, const std::string& name, int64_t resize_to,
                                            int64_t crop, std::int64_t max_pixels = kDefaultMaxImagePixels) {
  ResizeCenterCrop::Plan plan{};
  const DecodedRegion region = decode_region(
      bytes, name,
      [&](int64_t H, int64_t W) {
        plan = ResizeCenterCrop{resize_to, crop}.plan(H, W, name);
        return detail::resize_support(H, W, plan.out_h, plan.out_w, plan.window);
      },
      max_pixels);
  return detail::resize_window_to_rgb(region.pixels, region.mode, region.top, region.left, region.height,
                                      region.width, plan.out_h, plan.out_w, plan.window);
}

}  // namespace taxon::data
