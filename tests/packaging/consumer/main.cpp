// A downstream program: it only knows find_package(taxon) / taxon::taxon.
#include <taxon/core/core.hpp>

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
  return 0;
}
