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
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * n * n * n * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate,
                         benchmark::Counter::OneK::kIs1000);
  state.counters["GFLOP/s"].value /= 1e9;
}
BENCHMARK(BM_Matmul)->Arg(512)->Arg(1024)->Unit(benchmark::kMillisecond);
