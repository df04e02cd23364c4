// libFuzzer harness: taxon's model checkpoints (backbone::load_checkpoint: safetensors whose "config" metadata
// declares the ViT, or open_clip/UNICOM weights whose architecture is inferred from tensor shapes).
#include "support.hpp"
#include "taxon/backbone/weights.hpp"

TAXON_FUZZ_TARGET(checkpoint) {
  const auto path = taxon::fuzz::write_input("model.safetensors", taxon::fuzz::as_text(data, size));
  taxon::fuzz::expect_only_taxon_errors([&] {
    auto model = taxon::backbone::load_checkpoint(path);
    // A loaded model must embed an image of its declared size (in eval mode, as embedding does).
    model->eval();
    const auto& o = model->options;
    if (o.image_size() <= 64) (void)model->forward(at::zeros({1, 3, o.image_size(), o.image_size()})).sum().item<double>();
  });
}
