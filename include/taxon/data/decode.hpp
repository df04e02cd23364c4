#pragma once
// Image decoding: JPEG through libjpeg-turbo (scaled DCT decode when the caller only needs a much smaller image),
// PNG through libpng, to the mode PIL's Image.open gives (open_image, image_mode.hpp) or to RGB as PIL's
// convert("RGB") then does (decode_image). EXIF orientation is not applied, as Image.open does not. libjpeg/libpng report errors by longjmp: each setjmp lives in a small stage function
// that holds no C++ objects, so an error unwinds nothing it should not and becomes a taxon::Error naming the file.
// Small encoders (JPEG, PNG) let tests and benchmarks generate their own files.
#include "taxon/core/error.hpp"
#include "taxon/data/box.hpp"
#include "taxon/data/image_mode.hpp"
#include "taxon/data/recycle.hpp"
#include "taxon/io/atomic_file.hpp"

#include <ATen/ATen.h>

#include <csetjmp>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>

namespace taxon::data {

enum class ImageFormat { jpeg, png, unknown };

inline ImageFormat sniff_format(std::string_view bytes) {
  if (bytes.size() >= 3 && static_cast<unsigned char>(bytes[0]) == 0xFF && static_cast<unsigned char>(bytes[1]) == 0xD8 &&
      static_cast<unsigned char>(bytes[2]) == 0xFF)
    return ImageFormat::jpeg;
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), "\x89PNG\r\n\x1a\n", 8) == 0) return ImageFormat::png;
  return ImageFormat::unknown;
}

// Pillow's decompression-bomb guard (PIL/Image.py): Image.MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3 pixels
// ("around a quarter gigabyte for a 24-bit image"); Image.open warns (DecompressionBombWarning) above it and raises
// DecompressionBombError above twice it. taxon refuses what Pillow refuses and decodes everything Pillow decodes,
// without the warning: every decode function takes the limit (max_pixels), checked on the declared size before
// the decoder allocates anything.
inline constexpr std::int64_t kPillowMaxImagePixels = std::int64_t{1024} * 1024 * 1024 / 4 / 3;  // 89,478,485
inline constexpr std::int64_t kDefaultMaxImagePixels = 2 * kPillowMaxImagePixels;                // 178,956,970

namespace detail {

// Pillow's _decompression_bomb_check on a declared width x height (0 counts as 1, as there).
inline void check_image_pixels(std::uint64_t width, std::uint64_t height, std::int64_t max_pixels,
                               const std::string& name, const char* format) {
  TAXON_CHECK(max_pixels > 0, "data.bad-option", name, ": max_pixels must be positive, got ", max_pixels);
  const std::uint64_t pixels = std::max<std::uint64_t>(width, 1) * std::max<std::uint64_t>(height, 1);
  TAXON_CHECK(pixels <= static_cast<std::uint64_t>(max_pixels), "data.image-too-large", name, ": ", format,
              " declares ", width, "x", height, " = ", pixels, " pixels, more than the limit of ", max_pixels,
              " (a decompression bomb? raise max_pixels / max_image_pixels to decode it)");
}

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

extern "C" inline void taxon_jpeg_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// A truncated file only raises a warning in libjpeg (it pads with grey); treat that one as fatal, as PIL does.
extern "C" inline void taxon_jpeg_emit_message(j_common_ptr cinfo, int level) {
  if (level == -1 && cinfo->err->msg_code == JWRN_JPEG_EOF) taxon_jpeg_error_exit(cinfo);
}

extern "C" inline void taxon_jpeg_silent(j_common_ptr) {}

// Stage 2 (after jpeg_stage_header): scale choice and start, where libjpeg allocates. No C++ objects in this
// frame (longjmp target).
inline int jpeg_stage_start(jpeg_decompress_struct* cinfo, JpegError* err, int min_side) {
  if (setjmp(err->jump)) return -1;
  if (min_side > 0) {
    const unsigned shorter = cinfo->image_width < cinfo->image_height ? cinfo->image_width : cinfo->image_height;
    for (unsigned denom : {8u, 4u, 2u}) {
      if ((shorter + denom - 1) / denom >= static_cast<unsigned>(min_side)) {
        cinfo->scale_num = 1;
        cinfo->scale_denom = denom;
        break;
      }
    }
  }
  jpeg_start_decompress(cinfo);
  return 0;
}

inline int jpeg_stage_read(jpeg_decompress_struct* cinfo, JpegError* err, unsigned char* out, std::size_t stride) {
  if (setjmp(err->jump)) return -1;
  while (cinfo->output_scanline < cinfo->output_height) {
    JSAMPROW row = out + static_cast<std::size_t>(cinfo->output_scanline) * stride;
    jpeg_read_scanlines(cinfo, &row, 1);
  }
  jpeg_finish_decompress(cinfo);
  return 0;
}

// Region decode stages (libjpeg-turbo partial decompression). No C++ objects in these frames (longjmp targets).
// 4-component files (CMYK, or YCCK that libjpeg converts) decode to CMYK, as in PIL; the rest to RGB (grey
// replicated).
inline int jpeg_stage_header(jpeg_decompress_struct* cinfo, JpegError* err, const unsigned char* data, unsigned long size) {
  if (setjmp(err->jump)) return -1;
  jpeg_mem_src(cinfo, data, size);
  jpeg_read_header(cinfo, TRUE);
  cinfo->out_color_space = cinfo->num_components == 4 ? JCS_CMYK : JCS_RGB;
  return 0;
}

// PIL reads every CMYK JPEG with the Adobe convention (raw mode "CMYK;I": libjpeg's values inverted), and so does
// taxon; RGB output is returned as it is.
inline PilMode jpeg_output_mode(const jpeg_decompress_struct& cinfo, at::Tensor& pixels) {
  if (cinfo.out_color_space != JCS_CMYK) return cinfo.jpeg_color_space == JCS_GRAYSCALE ? PilMode::l : PilMode::rgb;
  std::uint8_t* p = pixels.data_ptr<std::uint8_t>();
  for (int64_t k = 0, n = pixels.numel(); k < n; ++k) p[k] = static_cast<std::uint8_t>(255 - p[k]);
  return PilMode::cmyk;
}

inline int jpeg_expected_components(const jpeg_decompress_struct& cinfo) { return cinfo.out_color_space == JCS_CMYK ? 4 : 3; }

// Starts decompression of columns [*x, *x + *width) (libjpeg widens them to iMCU boundaries) from row `top` on.
inline int jpeg_stage_begin_region(jpeg_decompress_struct* cinfo, JpegError* err, JDIMENSION* x, JDIMENSION* width,
                                   JDIMENSION top) {
  if (setjmp(err->jump)) return -1;
  jpeg_start_decompress(cinfo);
  if (*x > 0 || *width < cinfo->output_width) jpeg_crop_scanline(cinfo, x, width);
  if (top > 0 && jpeg_skip_scanlines(cinfo, top) != top) return -2;
  return 0;
}

// Reads rows up to `bottom`, then entropy-decodes the rest (skipping all but the last row, which goes to `scratch`)
// so a truncated file is still detected: skipping straight to the end would not read the remaining data.
inline int jpeg_stage_read_region(jpeg_decompress_struct* cinfo, JpegError* err, unsigned char* out, std::size_t stride,
                                  JDIMENSION bottom, unsigned char* scratch) {
  if (setjmp(err->jump)) return -1;
  const JDIMENSION first = cinfo->output_scanline;
  while (cinfo->output_scanline < bottom) {
    JSAMPROW row = out + static_cast<std::size_t>(cinfo->output_scanline - first) * stride;
    jpeg_read_scanlines(cinfo, &row, 1);
  }
  if (cinfo->output_scanline < cinfo->output_height) {
    if (cinfo->output_height - cinfo->output_scanline > 1)
      jpeg_skip_scanlines(cinfo, cinfo->output_height - 1 - cinfo->output_scanline);
    JSAMPROW row = scratch;
    jpeg_read_scanlines(cinfo, &row, 1);
  }
  jpeg_finish_decompress(cinfo);
  return 0;
}

// A decompressor whose errors longjmp to the stage functions above, destroyed on scope exit.
struct JpegDecompressor {
  jpeg_decompress_struct cinfo{};
  JpegError err{};
  JpegDecompressor() {
    cinfo.err = jpeg_std_error(&err.mgr);
    err.mgr.error_exit = taxon_jpeg_error_exit;
    err.mgr.emit_message = taxon_jpeg_emit_message;
    err.mgr.output_message = taxon_jpeg_silent;
    jpeg_create_decompress(&cinfo);
  }
  ~JpegDecompressor() { jpeg_destroy_decompress(&cinfo); }
  JpegDecompressor(const JpegDecompressor&) = delete;  // cinfo.err points into this object
  JpegDecompressor& operator=(const JpegDecompressor&) = delete;
};

// Decoded pixels, in this thread's recycled buffers (see recycle.hpp).
inline at::Tensor decoded_image(std::int64_t height, std::int64_t width, std::int64_t channels = 3, std::int64_t offset = 0) {
  thread_local RecycledBuffers buffers;
  return buffers.take({height, width, channels}, offset);
}

// Output for libjpeg-turbo: its SIMD colour conversion writes 16-byte-aligned rows with non-temporal stores,
// which evict the pixels right before the resize reads them; an odd start keeps every row of an even-width image
// cached (measured 568 vs 610 us for a 375x400 region, 398 vs 411 us for a full 375x500 decode).
inline at::Tensor jpeg_output(std::int64_t height, std::int64_t width, std::int64_t channels) {
  return decoded_image(height, width, channels, 1);
}

struct PngReader {
  const unsigned char* data;
  std::size_t size;
  std::size_t pos;
};

extern "C" inline void taxon_png_read(png_structp png, png_bytep out, png_size_t n) {
  auto* r = static_cast<PngReader*>(png_get_io_ptr(png));
  if (r->pos + n > r->size) png_error(png, "file is truncated");
  std::memcpy(out, r->data + r->pos, n);
  r->pos += n;
}

extern "C" inline void taxon_png_error(png_structp png, png_const_charp msg) {
  auto* buf = static_cast<char*>(png_get_error_ptr(png));
  std::snprintf(buf, 200, "%s", msg);
  png_longjmp(png, 1);
}
extern "C" inline void taxon_png_warning(png_structp, png_const_charp) {}

// Sets up the rows PIL's PNG plugin would read (its _MODES table): 16-bit grey as mode "I" (kept 16-bit here,
// big-endian), other 16-bit samples cut to their high byte (PIL's ";16B" raw modes, libpng's strip_16), 1/2/4-bit
// grey scaled to 0..255, palettes applied, alpha kept for LA/RGBA. A tRNS chunk makes no alpha channel: PIL keeps
// it as info["transparency"], which convert("RGB") ignores.
inline int png_stage_header(png_structp png, png_infop info, png_uint_32* w, png_uint_32* h, PilMode* mode) {
  if (setjmp(png_jmpbuf(png))) return -1;
  png_read_info(png, info);
  const int color = png_get_color_type(png, info);
  const int depth = png_get_bit_depth(png, info);
  const bool alpha = (color & PNG_COLOR_MASK_ALPHA) != 0;
  if (!alpha && png_get_valid(png, info, PNG_INFO_tRNS)) {
    png_set_tRNS_to_alpha(png);
    png_set_strip_alpha(png);
  }
  int channels = 3, sample_bytes = 1;
  if (color == PNG_COLOR_TYPE_GRAY && depth == 16) {
    *mode = PilMode::i;
    channels = 1;
    sample_bytes = 2;
  } else if (color == PNG_COLOR_TYPE_GRAY) {
    *mode = depth == 1 ? PilMode::bilevel : PilMode::l;
    if (depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    png_set_gray_to_rgb(png);
  } else if (color == PNG_COLOR_TYPE_PALETTE) {
    *mode = PilMode::p;
    png_set_palette_to_rgb(png);
  } else {
    *mode = color == PNG_COLOR_TYPE_GRAY_ALPHA ? PilMode::la : color == PNG_COLOR_TYPE_RGB_ALPHA ? PilMode::rgba : PilMode::rgb;
    channels = color == PNG_COLOR_TYPE_GRAY_ALPHA ? 2 : color == PNG_COLOR_TYPE_RGB_ALPHA ? 4 : 3;
    if (depth == 16) png_set_strip_16(png);
  }
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  *w = png_get_image_width(png, info);
  *h = png_get_image_height(png, info);
  return png_get_rowbytes(png, info) == static_cast<png_size_t>(*w) * channels * sample_bytes ? 0 : -2;
}

inline int png_stage_read(png_structp png, png_bytepp rows) {
  if (setjmp(png_jmpbuf(png))) return -1;
  png_read_image(png, rows);
  return 0;
}

}  // namespace detail

// Decodes JPEG bytes to the mode PIL opens them in: RGB, L (held as RGB) or CMYK (4-component CMYK/YCCK files).
// min_side > 0 lets libjpeg decode at 1/2, 1/4 or 1/8 scale as long as the shorter side stays >= min_side (what
// PIL's draft() does); 0 decodes at full size.
// Images whose declared width x height exceeds max_pixels are refused before decoding (see kDefaultMaxImagePixels).
inline DecodedImage open_jpeg(std::string_view bytes, const std::string& name, int min_side = 0,
                              std::int64_t max_pixels = kDefaultMaxImagePixels) {
  TAXON_CHECK(!bytes.empty(), "data.corrupt-image", name, ": empty file (0 bytes)");
  detail::JpegDecompressor d;
  auto& cinfo = d.cinfo;
  auto& err = d.err;
  if (detail::jpeg_stage_header(&cinfo, &err, reinterpret_cast<const unsigned char*>(bytes.data()),
                                static_cast<unsigned long>(bytes.size())) != 0)
    TAXON_FAIL("data.corrupt-image", name, ": cannot decode JPEG: ", err.message);
  detail::check_image_pixels(cinfo.image_width, cinfo.image_height, max_pixels, name, "JPEG");
  if (detail::jpeg_stage_start(&cinfo, &err, min_side) != 0)
    TAXON_FAIL("data.corrupt-image", name, ": cannot decode JPEG: ", err.message);
  const int components = detail::jpeg_expected_components(cinfo);
  TAXON_CHECK(cinfo.output_components == components, "data.corrupt-image", name, ": unexpected JPEG output components ",
              cinfo.output_components);
  at::Tensor out = detail::jpeg_output(cinfo.output_height, cinfo.output_width, components);
  if (detail::jpeg_stage_read(&cinfo, &err, out.data_ptr<uint8_t>(),
                              static_cast<std::size_t>(cinfo.output_width) * static_cast<std::size_t>(components)) != 0)
    TAXON_FAIL("data.corrupt-image", name, ": cannot decode JPEG: ", err.message);
  const PilMode mode = detail::jpeg_output_mode(cinfo, out);
  return {out, mode};
}

// Decodes PNG bytes to the mode PIL opens them in (png_stage_header lists them).
inline DecodedImage open_png(std::string_view bytes, const std::string& name,
                             std::int64_t max_pixels = kDefaultMaxImagePixels) {
  TAXON_CHECK(!bytes.empty(), "data.corrupt-image", name, ": empty file (0 bytes)");
  char message[256] = "unknown error";
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, message, detail::taxon_png_error, detail::taxon_png_warning);
  TAXON_CHECK(png != nullptr, "data.corrupt-image", name, ": libpng init failed");
  png_infop info = png_create_info_struct(png);
  struct Destroy {
    png_structp* p;
    png_infop* i;
    ~Destroy() { png_destroy_read_struct(p, i, nullptr); }
  } destroy{&png, &info};
  TAXON_CHECK(info != nullptr, "data.corrupt-image", name, ": libpng init failed");
  detail::PngReader reader{reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), 0};
  png_set_read_fn(png, &reader, detail::taxon_png_read);
  png_uint_32 w = 0, h = 0;
  PilMode mode = PilMode::rgb;
  const int rc = detail::png_stage_header(png, info, &w, &h, &mode);
  TAXON_CHECK(rc != -1, "data.corrupt-image", name, ": cannot decode PNG: ", message);
  TAXON_CHECK(rc == 0, "data.corrupt-image", name, ": unsupported PNG layout");
  TAXON_CHECK(w > 0 && h > 0, "data.corrupt-image", name, ": implausible PNG size ", w, "x", h);
  detail::check_image_pixels(w, h, max_pixels, name, "PNG");
  if (mode == PilMode::i) {  // 16-bit big-endian grey read whole, then widened to PIL's int32 "I"
    std::vector<std::uint8_t> raw(static_cast<std::size_t>(h) * w * 2);
    std::vector<png_bytep> rows(h);
    for (png_uint_32 y = 0; y < h; ++y) rows[y] = raw.data() + static_cast<std::size_t>(y) * w * 2;
    TAXON_CHECK(detail::png_stage_read(png, rows.data()) == 0, "data.corrupt-image", name, ": cannot decode PNG: ", message);
    at::Tensor out = at::empty({static_cast<int64_t>(h), static_cast<int64_t>(w), 1}, at::kInt);
    std::int32_t* o = out.data_ptr<std::int32_t>();
    for (std::size_t k = 0; k < static_cast<std::size_t>(h) * w; ++k) o[k] = (raw[2 * k] << 8) | raw[2 * k + 1];
    return {out, mode};
  }
  const std::int64_t channels = mode == PilMode::la ? 2 : mode == PilMode::rgba ? 4 : 3;
  at::Tensor out = detail::decoded_image(h, w, channels);
  std::vector<png_bytep> rows(h);
  for (png_uint_32 y = 0; y < h; ++y)
    rows[y] = out.data_ptr<uint8_t>() + static_cast<std::size_t>(y) * w * static_cast<std::size_t>(channels);
  TAXON_CHECK(detail::png_stage_read(png, rows.data()) == 0, "data.corrupt-image", name, ": cannot decode PNG: ", message);
  return {out, mode};
}

// Decodes by content (not extension) to the mode PIL's Image.open gives.
inline DecodedImage open_image(std::string_view bytes, const std::string& name, int min_side = 0,
                               std::int64_t max_pixels = kDefaultMaxImagePixels) {
  TAXON_CHECK(!bytes.empty(), "data.corrupt-image", name, ": empty file (0 bytes)");
  switch (sniff_format(bytes)) {
    case ImageFormat::jpeg: return open_jpeg(bytes, name, min_side, max_pixels);
    case ImageFormat::png: return open_png(bytes, name, max_pixels);
    default: TAXON_FAIL("data.corrupt-image", name, ": not a JPEG or PNG file (", bytes.size(), " bytes)");
  }
}

// open_jpeg, then PIL's convert("RGB"): [H,W,3] uint8.
inline at::Tensor decode_jpeg(std::string_view bytes, const std::string& name, int min_side = 0,
                              std::int64_t max_pixels = kDefaultMaxImagePixels) {
  return open_jpeg(bytes, name, min_side, max_pixels).to_rgb();
}

// open_png, then PIL's convert("RGB"): [H,W,3] uint8.
inline at::Tensor decode_png(std::string_view bytes, const std::string& name,
                             std::int64_t max_pixels = kDefaultMaxImagePixels) {
  return open_png(bytes, name, max_pixels).to_rgb();
}

// Image.open(f).convert("RGB") by content (not extension): [H,W,3] uint8 RGB.
inline at::Tensor decode_image(std::string_view bytes, const std::string& name, int min_side = 0,
                               std::int64_t max_pixels = kDefaultMaxImagePixels) {
  return open_image(bytes, name, min_side, max_pixels).to_rgb();
}

// A decoded block of a larger image: rows [top, top + pixels.size(0)) and columns [left, left + pixels.size(1))
// of the height x width original, in the mode PIL opens the file in (PilMode's layout).
struct DecodedRegion {
  at::Tensor pixels;
  std::int64_t top = 0, left = 0, height = 0, width = 0;
  PilMode mode = PilMode::rgb;
};

// Decodes at least the box `want(height, width)` returns, for callers that read only part of an image (a resize
// + center crop reads ~3/4 of a landscape photo's columns). JPEG columns outside it skip the IDCT and colour
// conversion, rows outside are only entropy-decoded (so a truncated file still fails). An 8-pixel margin around
// the box (fancy upsampling reaches 2 pixels) keeps every neighbour real: inside the box the pixels are
// bit-identical to open_image. PNGs are decoded whole.
// The size limit applies to the whole image (its entropy data is decoded in full).
inline DecodedRegion decode_region(std::string_view bytes, const std::string& name,
                                   const std::function<Box(std::int64_t, std::int64_t)>& want,
                                   std::int64_t max_pixels = kDefaultMaxImagePixels) {
  if (sniff_format(bytes) != ImageFormat::jpeg) {
    DecodedImage full = open_image(bytes, name, 0, max_pixels);
    const std::int64_t H = full.pixels.size(0), W = full.pixels.size(1);
    const Box box = want(H, W);
    TAXON_CHECK(box.top >= 0 && box.left >= 0 && box.top + box.height <= H && box.left + box.width <= W,
                "data.bad-box", name, ": region outside the ", H, "x", W, " image");
    return {full.pixels, 0, 0, H, W, full.mode};
  }
  detail::JpegDecompressor d;
  auto& cinfo = d.cinfo;
  auto& err = d.err;
  if (detail::jpeg_stage_header(&cinfo, &err, reinterpret_cast<const unsigned char*>(bytes.data()),
                                static_cast<unsigned long>(bytes.size())) != 0)
    TAXON_FAIL("data.corrupt-image", name, ": cannot decode JPEG: ", err.message);
  detail::check_image_pixels(cinfo.image_width, cinfo.image_height, max_pixels, name, "JPEG");
  const auto H = static_cast<std::int64_t>(cinfo.image_height), W = static_cast<std::int64_t>(cinfo.image_width);
  const Box box = want(H, W);
  TAXON_CHECK(box.top >= 0 && box.left >= 0 && box.height > 0 && box.width > 0 && box.top + box.height <= H &&
                  box.left + box.width <= W,
              "data.bad-box", name, ": region (top ", box.top, ", left ", box.left, ", ", box.height, "x", box.width,
              ") outside the ", H, "x", W, " image");
  constexpr std::int64_t kMargin = 8;
  const auto top = static_cast<JDIMENSION>(std::max<std::int64_t>(0, box.top - kMargin));
  const auto bottom = static_cast<JDIMENSION>(std::min(H, box.top + box.height + kMargin));
  auto x = static_cast<JDIMENSION>(std::max<std::int64_t>(0, box.left - kMargin));
  auto width = static_cast<JDIMENSION>(std::min(W, box.left + box.width + kMargin)) - x;
  const int begun = detail::jpeg_stage_begin_region(&cinfo, &err, &x, &width, top);
  if (begun != 0) TAXON_FAIL("data.corrupt-image", name, ": cannot decode JPEG: ", begun == -2 ? "file is truncated" : err.message);
  const int components = detail::jpeg_expected_components(cinfo);
  TAXON_CHECK(cinfo.output_components == components, "data.corrupt-image", name, ": unexpected JPEG output components ",
              cinfo.output_components);
  // After cropping, libjpeg writes output_width pixels per row, starting at column x.
  at::Tensor out = detail::jpeg_output(bottom - top, cinfo.output_width, components);
  const std::size_t stride = static_cast<std::size_t>(cinfo.output_width) * static_cast<std::size_t>(components);
  std::vector<unsigned char> scratch(stride);
  if (detail::jpeg_stage_read_region(&cinfo, &err, out.data_ptr<uint8_t>(), stride, bottom, scratch.data()) != 0)
    TAXON_FAIL("data.corrupt-image", name, ": cannot decode JPEG: ", err.message);
  const PilMode mode = detail::jpeg_output_mode(cinfo, out);
  return {out, static_cast<std::int64_t>(top), static_cast<std::int64_t>(x), H, W, mode};
}

namespace detail {
// The file's bytes in this thread's buffer, valid until the thread's next call (one file per sample in a loader).
inline std::string_view read_encoded(const std::filesystem::path& path) {
  thread_local std::string bytes;
  io::read_file_into(path, bytes);
  return bytes;
}
}  // namespace detail

// Image.open(path).convert("RGB"): [H,W,3] uint8.
inline at::Tensor read_image(const std::filesystem::path& path, int min_side = 0,
                             std::int64_t max_pixels = kDefaultMaxImagePixels) {
  return decode_image(detail::read_encoded(path), path.string(), min_side, max_pixels);
}

namespace detail {
inline int jpeg_stage_encode(jpeg_compress_struct* cinfo, JpegError* err, const unsigned char* pixels, int w, int h,
                             int channels, int quality, unsigned char** out, unsigned long* out_size) {
  if (setjmp(err->jump)) return -1;
  jpeg_mem_dest(cinfo, out, out_size);
  cinfo->image_width = static_cast<JDIMENSION>(w);
  cinfo->image_height = static_cast<JDIMENSION>(h);
  cinfo->input_components = channels;
  cinfo->in_color_space = channels == 4 ? JCS_CMYK : channels == 3 ? JCS_RGB : JCS_GRAYSCALE;
  jpeg_set_defaults(cinfo);
  jpeg_set_quality(cinfo, quality, TRUE);
  jpeg_start_compress(cinfo, TRUE);
  while (cinfo->next_scanline < cinfo->image_height) {
    JSAMPROW row = const_cast<unsigned char*>(pixels) + static_cast<std::size_t>(cinfo->next_scanline) * w * channels;
    jpeg_write_scanlines(cinfo, &row, 1);
  }
  jpeg_finish_compress(cinfo);
  return 0;
}

extern "C" inline void taxon_png_write(png_structp png, png_bytep data, png_size_t n) {
  auto* out = static_cast<std::vector<unsigned char>*>(png_get_io_ptr(png));
  out->insert(out->end(), data, data + n);
}
extern "C" inline void taxon_png_flush(png_structp) {}

inline int png_stage_encode(png_structp png, png_infop info, png_bytepp rows, int w, int h, int channels) {
  if (setjmp(png_jmpbuf(png))) return -1;
  png_set_IHDR(png, info, static_cast<png_uint_32>(w), static_cast<png_uint_32>(h), 8,
               channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  png_write_image(png, rows);
  png_write_end(png, nullptr);
  return 0;
}

inline at::Tensor contiguous_hwc_u8(const at::Tensor& image, const char* what, bool jpeg = false) {
  TAXON_CHECK(image.dim() == 3 && image.scalar_type() == at::kByte && (image.size(2) == 3 || image.size(2) == 1 ||
                                                                      (jpeg && image.size(2) == 4)),
              "data.bad-image", what, ": expects a [H,W,3] or [H,W,1]", jpeg ? " (or CMYK [H,W,4])" : "",
              " uint8 tensor, got ", image.sizes(), " ", image.scalar_type());
  return image.contiguous();
}
}  // namespace detail

// Encodes [H,W,3] (RGB) or [H,W,1] (gray) uint8 as baseline JPEG with 4:2:0 subsampling (libjpeg defaults), or
// [H,W,4] CMYK as PIL holds it as an Adobe CMYK JPEG (stored inverted, as Photoshop and PIL write them).
inline std::string encode_jpeg(const at::Tensor& image, int quality = 90) {
  at::Tensor img = detail::contiguous_hwc_u8(image, "encode_jpeg", true);
  if (img.size(2) == 4) img = 255 - img;
  jpeg_compress_struct cinfo{};
  detail::JpegError err{};
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = detail::taxon_jpeg_error_exit;
  err.mgr.output_message = detail::taxon_jpeg_silent;
  jpeg_create_compress(&cinfo);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  const int rc = detail::jpeg_stage_encode(&cinfo, &err, img.data_ptr<uint8_t>(), static_cast<int>(img.size(1)),
                                           static_cast<int>(img.size(0)), static_cast<int>(img.size(2)), quality, &buffer, &size);
  jpeg_destroy_compress(&cinfo);
  std::string out;
  if (rc == 0) out.assign(reinterpret_cast<char*>(buffer), size);
  std::free(buffer);
  TAXON_CHECK(rc == 0, "data.encode-failed", "JPEG encoding failed: ", err.message);
  return out;
}

inline std::string encode_png(const at::Tensor& image) {
  const at::Tensor img = detail::contiguous_hwc_u8(image, "encode_png");
  char message[256] = "unknown error";
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, message, detail::taxon_png_error, detail::taxon_png_warning);
  TAXON_CHECK(png != nullptr, "data.encode-failed", "libpng init failed");
  png_infop info = png_create_info_struct(png);
  std::vector<unsigned char> out;
  png_set_write_fn(png, &out, detail::taxon_png_write, detail::taxon_png_flush);
  const int w = static_cast<int>(img.size(1)), h = static_cast<int>(img.size(0)), c = static_cast<int>(img.size(2));
  std::vector<png_bytep> rows(static_cast<std::size_t>(h));
  for (int y = 0; y < h; ++y) rows[static_cast<std::size_t>(y)] = img.data_ptr<uint8_t>() + static_cast<std::size_t>(y) * w * c;
  const int rc = info ? detail::png_stage_encode(png, info, rows.data(), w, h, c) : -1;
  png_destroy_write_struct(&png, &info);
  TAXON_CHECK(rc == 0, "data.encode-failed", "PNG encoding failed: ", message);
  return std::string(out.begin(), out.end());
}

inline void write_image(const std::filesystem::path& path, const at::Tensor& image, int jpeg_quality = 90) {
  const std::string ext = path.extension().string();
  const bool png = ext == ".png" || ext == ".PNG";
  io::write_text_atomically(path, png ? encode_png(image) : encode_jpeg(image, jpeg_quality));
}

}  // namespace taxon::data
