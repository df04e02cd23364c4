// libFuzzer harness: safetensors files (taxon::io::load_safetensors), e.g. downloaded open_clip/UNICOM weights.
#include "support.hpp"
#include "taxon/io/safetensors.hpp"

TAXON_FUZZ_TARGET(safetensors) {
  const auto path = taxon::fuzz::write_input("input.safetensors", taxon::fuzz::as_text(data, size));
  taxon::fuzz::expect_only_taxon_errors([&] {
    const auto file = taxon::io::load_safetensors(path);
    // What a caller does next: read every tensor's bytes (a wrong range would read outside the mapping) and the
    // metadata, and look tensors up by name.
    for (const auto& [name, tensor] : file.tensors) {
      if (tensor.numel() > 0) (void)tensor.to(at::kDouble).sum().item<double>();
      (void)file.get(name);
    }
    for (const auto& [key, value] : file.metadata) (void)(key.size() + value.size());
  });
}
