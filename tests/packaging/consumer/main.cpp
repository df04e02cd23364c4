// A downstream program: it only knows find_package(taxon) / taxon::taxon (or taxon::cuda, whose fused-loss glue
// this plain C++ translation unit then compiles and links, without nvcc).
#include <taxon/core/core.hpp>
#if defined(TAXON_WITH_CUDA)
#include <taxon/loss/loss.hpp>
#endif

#include <ATen/ATen.h>

#include <iostream>

int main() {
  taxon::configure_threads(1, false);
  auto gen = taxon::make_generator(42);
  auto logits = at::randn({4, 10}, gen);
  auto labels = at::arange(4, at::kLong);
  const double loss = at::nll_loss(at::log_softmax(logits, 1), labels).item<double>();
  std::cout << "consumer: taxon " << taxon::version_string << " torch " << taxon::compat::torch_version
            << " loss=" << loss << std::endl;
#if defined(TAXON_WITH_CUDA)
  // The fused loss with the CUDA launchers compiled in; on CPU tensors it takes the CPU path.
  const auto fused = taxon::loss::fused_margin_softmax_ce(at::randn({4, 8}, gen), at::randn({10, 8}, gen), labels,
                                                          taxon::loss::ArcFace(32, 0.3).params());
  std::cout << "consumer: taxon::cuda linked, fused loss " << fused.item<double>() << std::endl;
#endif
  return 0;
}
