#pragma once
// Included once per benchmark program: pins the thread count (TAXON_NUM_THREADS, default 2) and records
// the LibTorch version, thread count, BLAS and load average in the benchmark's context block.
#include "taxon/core/compat.hpp"
#include "taxon/core/threads.hpp"

#include <benchmark/benchmark.h>

#include <fstream>
#include <string>

namespace taxon::bench {

inline std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

inline bool register_context() {
  const int threads = taxon::configure_threads(taxon::default_thread_count(), false);
  benchmark::AddCustomContext("torch", taxon::compat::torch_version);
  benchmark::AddCustomContext("intra_op_threads", std::to_string(threads));
  benchmark::AddCustomContext("blas", taxon::blas_description() + " " + taxon::blas_library());
  const std::string hint = taxon::blas_core_hint();
  if (!hint.empty()) benchmark::AddCustomContext("blas_hint", hint);
  benchmark::AddCustomContext("loadavg", load_average());
  return true;
}

inline const bool context_registered = register_context();

}  // namespace taxon::bench
