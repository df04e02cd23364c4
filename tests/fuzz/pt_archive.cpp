// libFuzzer harness: PyTorch .pt files through taxon's entry point (backbone::load_pretrained: a TorchScript archive
// as OpenAI CLIP ships, or a torch.save'd state dict as UNICOM ships, then the ViT inferred from it).
#include "support.hpp"
#include "taxon/backbone/torchscript.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = taxon::fuzz::write_input("input.pt", taxon::fuzz::as_text(data, size));
  taxon::fuzz::expect_only_taxon_errors([&] { (void)taxon::backbone::load_pretrained(path); });
  return 0;
}
