// The machine's matrix-multiply rate: the yardstick the other benchmarks' GFLOP/s are read against.
#include "support/context.hpp"

#include <ATen/ATen.h>

static void BM_Matmul(benchmark::State& state) {
  const int64_t n = state.range(0);
  auto a = at::randn({n, n});
  auto b = at::randn({n, n});
  auto c = at::empty({n, n});
  for (auto _ : state) {
    at::mm_out(c, a, b);
    benchmark::DoNotOptimize(c);
  }
  // Reported as a rate: "GFLOP=186/s" reads as GFLOP per second.
  state.counters["GFLOP"] = benchmark::Counter(2e-9 * n * n * n * static_cast<double>(state.iterations()),
                                               benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Matmul)->Arg(512)->Arg(1024)->Unit(benchmark::kMillisecond);
