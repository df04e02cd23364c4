// libFuzzer harness: PyTorch .pt files through taxon's entry point (backbone::load_pretrained: a TorchScript archive
// as OpenAI CLIP ships, or a torch.save'd state dict as UNICOM ships, then the ViT inferred from it).
#include "support.hpp"
#include "taxon/backbone/torchscript.hpp"

TAXON_FUZZ_TARGET(pt_archive) {
  const auto path = taxon::fuzz::write_input("input.pt", taxon::fuzz::as_text(data, size));
  taxon::fuzz::expect_only_taxon_errors([&] { (void)taxon::backbone::load_pretrained(path); });
}
