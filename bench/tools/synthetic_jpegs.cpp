// Writes a synthetic image-folder dataset for scripts/gpu-check's main job: OUT/class<k>/img<i>.jpg, `count` JPEGs
// of size×size pixels over `classes` classes (image i in class i mod classes), in parallel on all cores.
// Usage: taxon_synthetic_jpegs OUT COUNT [SIZE=224] [CLASSES=100]
#include "support/synthetic_photo.hpp"

#include "taxon/core/error.hpp"
#include "taxon/core/threads.hpp"
#include "taxon/data/decode.hpp"

#include <ATen/Parallel.h>

#include <filesystem>
#include <iostream>
#include <string>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: taxon_synthetic_jpegs OUT COUNT [SIZE=224] [CLASSES=100]\n";
    return 2;
  }
  try {
    namespace fs = std::filesystem;
    const fs::path out = argv[1];
    const std::int64_t count = std::stoll(argv[2]);
    const std::int64_t size = argc > 3 ? std::stoll(argv[3]) : 224;
    const std::int64_t classes = argc > 4 ? std::stoll(argv[4]) : 100;
    TAXON_CHECK(count > 0 && size > 0 && classes > 0, "cli.bad-option", "COUNT, SIZE and CLASSES must be positive");
    taxon::configure_threads(taxon::default_thread_count(), false);
    for (std::int64_t c = 0; c < classes; ++c) fs::create_directories(out / ("class" + std::to_string(c)));
    at::parallel_for(0, count, 16, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i) {
        const auto c = static_cast<std::uint64_t>(i % classes);
        taxon::data::write_image(out / ("class" + std::to_string(c)) / ("img" + std::to_string(i) + ".jpg"),
                                 taxon::bench::synthetic_photo(size, size, c, static_cast<std::uint64_t>(i)));
      }
    });
    std::cout << "wrote " << count << " " << size << "x" << size << " JPEGs in " << classes << " classes to "
              << out.string() << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "taxon_synthetic_jpegs: " << e.what() << "\n";
    return 1;
  }
}
