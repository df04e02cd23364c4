#pragma once
// An image as PIL's Image.open holds it — its mode and pixels — and PIL's convert("RGB") of it. CLIP's
// preprocessing resizes in the image's own mode and converts to RGB after the crop; taxon keeps the mode from
// decode to that point for the same result (decode_crop.hpp), docs/data.md "Image modes" lists what each does.
#include "taxon/core/error.hpp"

#include <ATen/ATen.h>

#include <cstdint>

namespace taxon::data {

// PIL's mode of a decoded file, and the layout taxon holds it in. Where a layout differs from PIL's, resizing it
// and converting gives PIL's result exactly.
enum class PilMode {
  rgb,      // "RGB": [H,W,3] uint8
  l,        // "L": [H,W,3] uint8, the grey replicated (resizing each copy = resizing the grey plane)
  bilevel,  // "1" (1-bit grey PNG): [H,W,3] uint8 of 0/255; PIL resizes it with nearest neighbour
  p,        // "P" (palette PNG): [H,W,3] uint8, palette applied (nearest neighbour commutes with the lookup)
  la,       // "LA": [H,W,2] uint8, grey and alpha
  rgba,     // "RGBA": [H,W,4] uint8
  cmyk,     // "CMYK" (4-component JPEG, CMYK or YCCK): [H,W,4] uint8 with PIL's values (libjpeg's inverted)
  i,        // "I" (16-bit grey PNG): [H,W,1] int32
};

inline const char* pil_mode_name(PilMode mode) {
  switch (mode) {
    case PilMode::rgb: return "RGB";
    case PilMode::l: return "L";
    case PilMode::bilevel: return "1";
    case PilMode::p: return "P";
    case PilMode::la: return "LA";
    case PilMode::rgba: return "RGBA";
    case PilMode::cmyk: return "CMYK";
    case PilMode::i: return "I";
  }
  return "?";
}

// PIL resizes modes "1" and "P" with nearest neighbour whatever filter was asked for (Image.resize).
inline bool pil_resizes_nearest(PilMode mode) { return mode == PilMode::bilevel || mode == PilMode::p; }

namespace detail {

// Pillow's MULDIV255: a * b / 255 rounded, in integers.
inline std::uint32_t muldiv255(std::uint32_t a, std::uint32_t b) {
  const std::uint32_t t = a * b + 128;
  return ((t >> 8) + t) >> 8;
}

inline std::uint8_t clamp_u8(std::int64_t v) { return static_cast<std::uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v); }

inline void check_mode_layout(const at::Tensor& pixels, PilMode mode) {
  const int64_t channels = mode == PilMode::la ? 2 : mode == PilMode::rgba || mode == PilMode::cmyk ? 4 : mode == PilMode::i ? 1 : 3;
  const auto dtype = mode == PilMode::i ? at::kInt : at::kByte;
  TAXON_CHECK(pixels.dim() == 3 && pixels.size(2) == channels && pixels.scalar_type() == dtype, "data.bad-image",
              "a mode ", pil_mode_name(mode), " image is held as [H,W,", channels, "] ", dtype, ", got ", pixels.sizes(),
              " ", pixels.scalar_type());
}

}  // namespace detail

// PIL's convert("RGB") of `pixels` held in `mode`'s layout: alpha dropped without compositing (LA, RGBA), CMYK by
// Pillow's cmyk2rgb, "I" clipped to 0..255 (so most 16-bit grey values become white, as in PIL). Returns `pixels`
// itself for the RGB layouts.
inline at::Tensor pil_to_rgb(const at::Tensor& pixels, PilMode mode) {
  detail::check_mode_layout(pixels, mode);
  switch (mode) {
    case PilMode::rgb:
    case PilMode::l:
    case PilMode::bilevel:
    case PilMode::p: return pixels;
    default: break;
  }
  const at::Tensor in = pixels.contiguous();
  const int64_t n = in.size(0) * in.size(1);
  at::Tensor out = at::empty({in.size(0), in.size(1), 3}, at::kByte);
  std::uint8_t* o = out.data_ptr<std::uint8_t>();
  if (mode == PilMode::i) {
    const std::int32_t* p = in.data_ptr<std::int32_t>();
    for (int64_t k = 0; k < n; ++k) o[3 * k] = o[3 * k + 1] = o[3 * k + 2] = detail::clamp_u8(p[k]);
    return out;
  }
  const std::uint8_t* p = in.data_ptr<std::uint8_t>();
  if (mode == PilMode::la) {
    for (int64_t k = 0; k < n; ++k) o[3 * k] = o[3 * k + 1] = o[3 * k + 2] = p[2 * k];
  } else if (mode == PilMode::rgba) {
    for (int64_t k = 0; k < n; ++k)
      for (int c = 0; c < 3; ++c) o[3 * k + c] = p[4 * k + c];
  } else {  // cmyk: Pillow's cmyk2rgb
    for (int64_t k = 0; k < n; ++k) {
      const std::int64_t nk = 255 - p[4 * k + 3];
      for (int c = 0; c < 3; ++c)
        o[3 * k + c] = detail::clamp_u8(nk - detail::muldiv255(p[4 * k + c], static_cast<std::uint32_t>(nk)));
    }
  }
  return out;
}

// A decoded image file as PIL's Image.open holds it (see PilMode for the layouts).
struct DecodedImage {
  at::Tensor pixels;
  PilMode mode = PilMode::rgb;
  // Image.open(f).convert("RGB"): [H,W,3] uint8.
  at::Tensor to_rgb() const { return pil_to_rgb(pixels, mode); }
};

}  // namespace taxon::data
