// Core utilities: error ids, options idiom, seeding, progress formatting, atomic writes, threads/BLAS.
#include "taxon/core/core.hpp"
#include "taxon/io/atomic_file.hpp"

#include <ATen/ATen.h>
#include <catch2/catch.hpp>
#include <torch/nn/functional/normalization.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "support/temp_dir.hpp"
#include "support/tensor_compare.hpp"

namespace test_core {

struct DemoOptions {
  TAXON_ARG(double, scale) = 32.0;
  TAXON_ARG(int, layers) = 12;
};

}  // namespace test_core

TEST_CASE("TAXON_CHECK throws taxon::Error with a stable id", "[core]") {
  try {
    TAXON_CHECK(1 + 1 == 3, "core.demo", "value was ", 2, " expected ", 3);
    FAIL("did not throw");
  } catch (const taxon::Error& e) {
    CHECK(e.id() == "core.demo");
    CHECK(std::string(e.what()) == "[taxon.core.demo] value was 2 expected 3");
  }
  REQUIRE_NOTHROW([] { TAXON_CHECK(true, "core.demo", "never formatted"); }());
  REQUIRE_TAXON_ERROR(TAXON_FAIL("core.other", "x"), "core.other");
}

TEST_CASE("options idiom: defaults, chained setters, rvalue chaining", "[core]") {
  test_core::DemoOptions a;
  CHECK(a.scale() == 32.0);
  CHECK(a.layers() == 12);
  a.scale(64).layers(24);
  CHECK(a.scale() == 64.0);
  CHECK(a.layers() == 24);
  auto b = test_core::DemoOptions().layers(3);
  CHECK(b.layers() == 3);
  CHECK(b.scale() == 32.0);
}

TEST_CASE("derive_seed gives distinct reproducible streams", "[core]") {
  CHECK(taxon::derive_seed(1, {2, 3}) == taxon::derive_seed(1, {2, 3}));
  CHECK(taxon::derive_seed(1, {2, 3}) != taxon::derive_seed(1, {3, 2}));
  CHECK(taxon::derive_seed(1, {2}) != taxon::derive_seed(2, {2}));
  auto g1 = taxon::make_generator(7, {1});
  auto g2 = taxon::make_generator(7, {1});
  auto g3 = taxon::make_generator(7, {2});
  auto a = at::rand({16}, g1), b = at::rand({16}, g2), c = at::rand({16}, g3);
  CHECK(at::equal(a, b));
  CHECK_FALSE(at::equal(a, c));
}

TEST_CASE("seed_everything makes the default generator reproducible", "[core]") {
  taxon::seed_everything(123);
  auto a = at::randn({8});
  taxon::seed_everything(123);
  auto b = at::randn({8});
  CHECK(at::equal(a, b));
}

TEST_CASE("progress formatting shows rate and ETA", "[core]") {
  taxon::ProgressSnapshot p;
  p.done = 50;
  p.total = 200;
  p.elapsed_s = 10;
  CHECK(p.rate() == Approx(5.0));
  CHECK(p.eta_s() == Approx(30.0));
  const auto line = taxon::format_progress("embed", p, "img", "loss 1.5");
  CHECK(line == "embed 50/200 (25%) 5.0 img/s elapsed 0:10 eta 0:30 loss 1.5");
  CHECK(taxon::format_duration(3725) == "1:02:05");
  CHECK(taxon::format_duration(-1) == "?");

  std::ostringstream captured;
  taxon::log::set_sink(captured);
  taxon::log::set_level(taxon::log::Level::info);
  {
    taxon::Progress progress("steps", 4, "step");
    progress.set_interactive(false);
    for (int i = 0; i < 4; ++i) progress.advance(1);
  }
  taxon::log::set_level(taxon::log::Level::warn);
  taxon::log::set_sink(std::cerr);
  CHECK(captured.str().find("steps 4/4 (100%)") != std::string::npos);
}

namespace test_core {
// A clock the test moves by hand, and the log lines a block of code writes at info level.
struct ManualClock {
  std::shared_ptr<taxon::Progress::Clock::time_point> now = std::make_shared<taxon::Progress::Clock::time_point>();
  void advance_seconds(double s) {
    *now += std::chrono::duration_cast<taxon::Progress::Clock::duration>(std::chrono::duration<double>(s));
  }
  std::function<taxon::Progress::Clock::time_point()> fn() const {
    return [now = now] { return *now; };
  }
};
template <typename F>
std::vector<std::string> info_lines(F&& body) {
  std::ostringstream captured;
  taxon::log::set_sink(captured);
  taxon::log::set_level(taxon::log::Level::info);
  body();
  taxon::log::set_level(taxon::log::Level::warn);
  taxon::log::set_sink(std::cerr);
  std::vector<std::string> lines;
  std::istringstream in(captured.str());
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}
}  // namespace test_core

TEST_CASE("progress off a terminal logs a line each interval of the injected clock, then the summary", "[core]") {
  test_core::ManualClock clock;
  const auto lines = test_core::info_lines([&] {
    taxon::Progress progress("embed", 100, "img",
                             taxon::ProgressOptions().interactive(false).every_seconds(10).clock(clock.fn()));
    for (int i = 0; i < 100; ++i) {
      clock.advance_seconds(1);  // 1 image per second: lines at 10 s, 20 s, ... 90 s; 100 s is the summary
      progress.advance(1);
    }
    progress.finish();
    CHECK(progress.lines_logged() == 10);
  });
  REQUIRE(lines.size() == 10);
  CHECK(lines.front() == "[taxon info] embed 10/100 (10%) 1.0 img/s elapsed 0:10 eta 1:30");
  CHECK(lines[4] == "[taxon info] embed 50/100 (50%) 1.0 img/s elapsed 0:50 eta 0:50");
  CHECK(lines.back() == "[taxon info] embed 100/100 (100%) 1.0 img/s elapsed 1:40 eta 0:00");
}

TEST_CASE("progress off a terminal by share of the total, and by time with an unknown total", "[core]") {
  test_core::ManualClock clock;
  auto lines = test_core::info_lines([&] {
    taxon::Progress progress("kmeans", 20, "iter",
                             taxon::ProgressOptions().interactive(false).every_seconds(0).every_percent(25).clock(clock.fn()));
    for (int i = 0; i < 20; ++i) {
      clock.advance_seconds(100);  // time alone never triggers a line here
      progress.advance(1, "obj 1.5");
    }
  });
  REQUIRE(lines.size() == 4);  // 25%, 50%, 75%, and the summary at 100%
  CHECK(lines[0] == "[taxon info] kmeans 5/20 (25%) 0.0 iter/s elapsed 8:20 eta 25:00 obj 1.5");
  CHECK(lines[2].find("kmeans 15/20 (75%)") != std::string::npos);
  CHECK(lines[3].find("kmeans 20/20 (100%)") != std::string::npos);

  // Unknown total: by time only.
  lines = test_core::info_lines([&] {
    taxon::Progress progress("stream", 0, "it", taxon::ProgressOptions().interactive(false).every_seconds(5).clock(clock.fn()));
    for (int i = 0; i < 12; ++i) {
      clock.advance_seconds(1);
      progress.advance(1);
    }
  });
  REQUIRE(lines.size() == 3);  // 5 s, 10 s, summary
  CHECK(lines[1] == "[taxon info] stream 10 1.0 it/s elapsed 0:10");
}

TEST_CASE("progress intervals parse as seconds or a share", "[core]") {
  CHECK(taxon::parse_progress_every("30s").every_seconds() == 30.0);
  CHECK(taxon::parse_progress_every("2.5").every_seconds() == 2.5);
  const auto share = taxon::parse_progress_every("5%");
  CHECK(share.every_percent() == 5.0);
  CHECK(share.every_seconds() == 0.0);
  for (const char* bad : {"", "s", "0", "-3s", "ten", "150%", "10m"})
    REQUIRE_TAXON_ERROR(taxon::parse_progress_every(bad), "core.bad-option");
}

TEST_CASE("write_atomically replaces the target and keeps it on failure", "[core][io]") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / "taxon_test_atomic";
  fs::remove_all(dir);
  const fs::path target = dir / "sub" / "out.txt";
  taxon::io::write_text_atomically(target, "first");
  CHECK(taxon::io::read_file(target) == "first");

  REQUIRE_THROWS_AS(taxon::io::write_atomically(target,
                                                [](std::ostream& out) {
                                                  out << "partial";
                                                  throw std::runtime_error("killed mid-write");
                                                }),
                    std::runtime_error);
  CHECK(taxon::io::read_file(target) == "first");
  size_t files = 0;
  for (auto& entry : fs::directory_iterator(dir / "sub")) files += entry.is_regular_file();
  CHECK(files == 1);  // no temporary left behind
  REQUIRE_TAXON_ERROR(taxon::io::read_file(dir / "missing.bin"), "io.missing-file");
  fs::remove_all(dir);
}

TEST_CASE("threads and BLAS are reported", "[core]") {
  CHECK(taxon::configure_threads(2, false) == 2);
  const auto blas = taxon::blas_library();
  INFO("BLAS library: " << blas);
  CHECK(blas != "none");
  CHECK(!taxon::blas_name().empty());
  // OpenBLAS names its kernel family; the packaging test guarantees OpenBLAS serves libblas.so.3 here.
  if (taxon::blas_name() == "OpenBLAS") CHECK(!taxon::blas_core().empty());
}

TEST_CASE("OpenBLAS core advice only for AVX2 kernels on an AVX-512 CPU", "[core]") {
  CHECK(taxon::openblas_core_hint("Haswell", true).find("OPENBLAS_CORETYPE=SkylakeX") != std::string::npos);
  CHECK(!taxon::openblas_core_hint("zen", true).empty());
  CHECK(taxon::openblas_core_hint("Haswell", false).empty());
  CHECK(taxon::openblas_core_hint("SkylakeX", true).empty());
  CHECK(taxon::openblas_core_hint("", true).empty());
  CHECK(taxon::openblas_core_hint("Haswell", true, "Haswell").find("OPENBLAS_CORETYPE=Haswell selects") != std::string::npos);
}

TEST_CASE("version header matches the CMake project version", "[core]") {
  std::ifstream cmake(std::string(TAXON_SOURCE_DIR) + "/CMakeLists.txt");
  std::stringstream text;
  text << cmake.rdbuf();
  CHECK(text.str().find(std::string("project(taxon VERSION ") + taxon::version_string) != std::string::npos);
}

TEST_CASE("l2_normalize_rows is F.normalize(dim=1, eps=1e-12): zero rows stay zero", "[core]") {
  at::Tensor x = at::randn({5, 7});
  x[2].zero_();
  x[3] *= 1e-20;  // below eps: divided by 1e-12, not by its own norm
  namespace F = torch::nn::functional;
  const at::Tensor expected = F::normalize(x, F::NormalizeFuncOptions().dim(1).eps(1e-12));
  const at::Tensor got = taxon::l2_normalize_rows(x);
  CHECK(at::equal(got, expected));
  CHECK(at::equal(got[2], at::zeros({7})));
  CHECK(at::allclose(got.narrow(0, 0, 2).norm(2, {1}), at::ones({2})));
}

TEST_CASE("io filesystem helpers raise taxon errors naming the path", "[core][io]") {
  namespace fs = std::filesystem;
  taxon::test::TempDir dir("taxon_test_core_fs");
  std::ofstream(dir / "file") << "x";
  REQUIRE_TAXON_ERROR(taxon::io::ensure_directory(dir / "file" / "sub"), "io.cannot-write");
  REQUIRE_TAXON_ERROR(taxon::io::write_text_atomically(dir / "file" / "out.txt", "x"), "io.cannot-write");
  REQUIRE_TAXON_ERROR(taxon::io::append_text(dir / "file" / "log.jsonl", "x\n"), "io.cannot-write");
  REQUIRE_TAXON_ERROR(taxon::io::require_file(dir / "absent", "weights"), "io.missing-file");
  REQUIRE_TAXON_ERROR(taxon::io::require_file(dir.path), "io.cannot-read");
  REQUIRE_TAXON_ERROR(taxon::io::require_directory(dir / "file"), "io.cannot-read");
  REQUIRE_TAXON_ERROR(taxon::io::file_size(dir / "absent"), "io.missing-file");
  CHECK_FALSE(taxon::io::path_exists(dir / "file" / "below-a-file"));
  taxon::io::ensure_directory(dir / "a" / "b");
  taxon::io::ensure_directory(dir / "a" / "b");  // existing: fine
  taxon::io::append_text(dir / "a" / "log", "one\n");
  taxon::io::append_text(dir / "a" / "log", "two\n");
  CHECK(taxon::io::read_file(dir / "a" / "log") == "one\ntwo\n");
  std::ofstream(dir / "empty");
  taxon::io::copy_file_atomically(dir / "empty", dir / "a" / "empty-copy");
  taxon::io::copy_file_atomically(dir / "a" / "log", dir / "a" / "log-copy");
  CHECK(taxon::io::read_file(dir / "a" / "empty-copy").empty());
  CHECK(taxon::io::read_file(dir / "a" / "log-copy") == "one\ntwo\n");
  CHECK(taxon::io::file_size(dir / "a" / "log") == 8);
  CHECK(taxon::io::subdirectory_names(dir.path) == std::vector<std::string>{"a"});
  // A directory filled atomically: a failure leaves nothing, success replaces an earlier one.
  REQUIRE_THROWS_AS(taxon::io::write_directory_atomically(dir.path, "d", [](const fs::path& d) {
                      std::ofstream(d / "part") << "partial";
                      throw std::runtime_error("disk full");
                    }),
                    std::runtime_error);
  CHECK(taxon::io::subdirectory_names(dir.path) == std::vector<std::string>{"a"});
  taxon::io::write_directory_atomically(dir.path, "d", [](const fs::path& d) { std::ofstream(d / "one") << "1"; });
  taxon::io::write_directory_atomically(dir.path, "d", [](const fs::path& d) { std::ofstream(d / "two") << "2"; });
  CHECK_FALSE(fs::exists(dir / "d" / "one"));
  CHECK(fs::exists(dir / "d" / "two"));
}
