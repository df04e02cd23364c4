// libFuzzer harness: JPEG/PNG decoding (taxon::data::decode_image, the scaled JPEG decode, decode_region, the
// fused decode_resize_center_crop the Loader uses and the mode-preserving open_image + resize_center_crop), i.e.
// every image file of a dataset.
#include "support.hpp"
#include "taxon/data/decode.hpp"
#include "taxon/data/decode_crop.hpp"

namespace fuzz_image {
// Smaller than the default limit (Pillow's) so that each input decodes fast; the code paths are the same.
constexpr std::int64_t kMaxPixels = std::int64_t{4096} * 4096;
}  // namespace fuzz_image

TAXON_FUZZ_TARGET(image) {
  const std::string_view bytes = taxon::fuzz::as_text(data, size);
  using namespace taxon::data;
  taxon::fuzz::expect_only_taxon_errors([&] { (void)decode_image(bytes, "fuzz", 0, kMaxPixels).sum().item<int64_t>(); });
  taxon::fuzz::expect_only_taxon_errors([&] { (void)decode_image(bytes, "fuzz", 16, kMaxPixels).sum().item<int64_t>(); });
  taxon::fuzz::expect_only_taxon_errors(
      [&] { (void)decode_resize_center_crop(bytes, "fuzz", 24, 20, kMaxPixels).sum().item<int64_t>(); });
  // The file in its own PIL mode (alpha, palette, CMYK, 16-bit grey), resized there as CLIP's preprocessing does.
  taxon::fuzz::expect_only_taxon_errors([&] {
    const DecodedImage opened = open_image(bytes, "fuzz", 0, kMaxPixels);
    (void)resize_center_crop(opened, ResizeCenterCrop{24, 20}).sum().item<int64_t>();
  });
  taxon::fuzz::expect_only_taxon_errors([&] {
    const auto region = decode_region(
        bytes, "fuzz",
        [](std::int64_t h, std::int64_t w) { return Box{h / 3, w / 5, std::max<std::int64_t>(1, h / 2), std::max<std::int64_t>(1, w / 2)}; },
        kMaxPixels);
    (void)region.pixels.sum().item<int64_t>();
  });
}
