// libFuzzer harness: torch.save .pt files through taxon's restricted reader (io::load_torch_save, the zip and the
// pickle), the wrapper stripping and the ViT inferred from the tensors, as backbone::load_pretrained does for a
// torch.save archive. TorchScript archives (OpenAI CLIP's .pt) go to LibTorch's torch::jit::load and are not fuzzed
// here (docs/fuzzing.md, Known limits).
#include "support.hpp"
#include "taxon/backbone/torchscript.hpp"
#include "taxon/core/log.hpp"

TAXON_FUZZ_TARGET(pt_archive) {
  static const bool quiet = [] {  // the loader reports stripped wrappers on every input otherwise
    taxon::log::set_level(taxon::log::Level::warn);
    return true;
  }();
  (void)quiet;
  const auto path = taxon::fuzz::write_input("input.pt", taxon::fuzz::as_text(data, size));
  taxon::fuzz::expect_only_taxon_errors([&] {
    (void)taxon::io::detect_pt_kind(path);
    const auto dict = taxon::backbone::load_torch_save_state_dict(path);
    (void)taxon::backbone::vit_from_state_dict(dict.tensors, {}, path.string());
  });
}
