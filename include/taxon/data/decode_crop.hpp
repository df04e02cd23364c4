#pragma once
// Decode fused with CLIP's resize + center crop: only the pixels the crop reads are decoded (a landscape photo
// resized to 224 and center-cropped reads ~3/4 of its columns), and the result is bit-identical to
// resize_center_crop(resize_to, crop) applied to the full decode. Image datasets use it to answer a Loader's
// DecodeRequest (decode_request.hpp), or for every image with the decode_resize_crop option.
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

}  // namespace detail

// A dataset option: decode every image straight to resize_center_crop(resize_to, crop) — CLIP eval's first step,
// e.g. {224, 224} — reading only the pixels the crop needs; bit-identical to decoding in full and then cropping.
// {0, 0} = off. Inside a Loader this is not needed: the Loader asks for the crop its transform starts with.
struct DecodeResizeCrop {
  std::int64_t resize_to = 0, crop = 0;
  bool enabled() const { return resize_to > 0 && crop > 0; }
};

// resize_center_crop(resize_to, crop) of an encoded JPEG or PNG, decoding only what the crop needs.
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
  return detail::resize_core(region.pixels, region.top, region.left, region.height, region.width, plan.out_h,
                             plan.out_w, plan.window);
}

}  // namespace taxon::data
