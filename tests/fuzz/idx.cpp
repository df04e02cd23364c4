// libFuzzer harness: MNIST-format idx files, plain or gzip (taxon::data::IdxDataset), e.g. a dataset download.
#include "support.hpp"
#include "taxon/data/idx_dataset.hpp"

TAXON_FUZZ_TARGET(idx) {
  const auto images = taxon::fuzz::write_input("images-idx3-ubyte", taxon::fuzz::as_text(data, size));
  taxon::fuzz::expect_only_taxon_errors([&] {
    const at::Tensor t = taxon::data::detail::read_idx_u8(images);
    if (t.numel() > 0) (void)t.sum().item<int64_t>();
    // Labels are written here, one byte per image: only for counts a real file could hold in this input's size.
    if (t.dim() != 3 || t.size(0) > 1 << 16) return;
    // As an image file of a dataset: labels for every image (all class 0), then read samples back.
    std::string labels("\0\0\x08\x01", 4);
    const auto n = static_cast<uint32_t>(t.size(0));
    for (int shift = 24; shift >= 0; shift -= 8) labels += static_cast<char>((n >> shift) & 0xFF);
    labels.append(n, '\0');
    const auto label_path = taxon::fuzz::write_input("labels-idx1-ubyte", labels);
    const taxon::data::IdxDataset dataset(images, label_path);
    for (int64_t i = 0; i < std::min<int64_t>(dataset.size(), 3); ++i) (void)dataset.get(i);
  });
}
