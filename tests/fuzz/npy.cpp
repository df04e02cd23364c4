// libFuzzer harness: .npy files (taxon::io::load_npy), e.g. embeddings or labels handed over by another tool.
#include "support.hpp"
#include "taxon/io/npy.hpp"

TAXON_FUZZ_TARGET(npy) {
  const auto path = taxon::fuzz::write_input("input.npy", taxon::fuzz::as_text(data, size));
  taxon::fuzz::expect_only_taxon_errors([&] {
    const at::Tensor t = taxon::io::load_npy(path);
    // What a caller does next: read every element (a wrong size or stride would read outside the buffer).
    if (t.numel() > 0) (void)t.to(at::kDouble).sum().item<double>();
  });
}
