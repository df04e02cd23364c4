// libFuzzer harness: a training checkpoint's trainer.json (Trainer::resume), on a demo ViT + PartialFC trainer whose
// other checkpoint files (weights, optimizer, generators) are valid: only the JSON state varies.
#include "support.hpp"
#include "taxon/backbone/zoo.hpp"
#include "taxon/pfc/partial_fc.hpp"
#include "taxon/train/train.hpp"

namespace fuzz_trainer_state {

using Trainer = taxon::train::Trainer<taxon::backbone::VisionTransformer, taxon::pfc::PartialFC<taxon::loss::ArcFace>>;

Trainer make_trainer() {
  auto backbone = taxon::backbone::VisionTransformer(taxon::backbone::zoo_config("demo28").layers(1));
  auto head = taxon::pfc::PartialFC<taxon::loss::ArcFace>(taxon::pfc::PartialFCOptions(4, 64));
  return Trainer(backbone, head, taxon::train::TrainerOptions().epochs(2).steps_per_epoch(3),
                 taxon::train::Schedule::one_cycle());
}

// One checkpoint written at start-up; each input replaces its trainer.json.
const std::filesystem::path& checkpoint_dir() {
  static const std::filesystem::path dir = [] {
    auto trainer = make_trainer();
    return trainer.save_checkpoint(taxon::fuzz::scratch_dir() / "checkpoints");
  }();
  return dir;
}

}  // namespace fuzz_trainer_state

TAXON_FUZZ_TARGET(trainer_state) {
  static Trainer trainer = make_trainer();
  const auto& dir = checkpoint_dir();
  taxon::fuzz::write_input("checkpoints/" + dir.filename().string() + "/trainer.json", taxon::fuzz::as_text(data, size));
  taxon::fuzz::expect_only_taxon_errors([&] {
    trainer.resume(dir);
    (void)trainer.state_json().dump();
    (void)trainer.total_steps();
  });
}
