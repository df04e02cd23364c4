// Transforms: the PIL-exact bicubic resize (CLIP/torchvision preprocessing), crops, presets, random augmentations.
#include "taxon/data/presets.hpp"
#include "taxon/data/transforms.hpp"

#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <ATen/CPUGeneratorImpl.h>

#include <array>
#include <string>
#include <vector>

#include "support/cpu_variants.hpp"
#include "support/tensor_compare.hpp"

// LibTorch's logging header (reached through ATen's CPUGeneratorImpl.h) replaces Catch's CHECK with glog's,
// which aborts instead of reporting; restore Catch's.
#undef CHECK
#define CHECK(...) INTERNAL_CATCH_TEST("CHECK", Catch::ResultDisposition::ContinueOnFailure, __VA_ARGS__)

namespace test_data_transforms {

// The synthetic source image shared with the Python script that produced the expected values below:
// r = (7x + 3y) % 256, g = (x^2 + 2y^2) % 256, b = 4x4 checkerboard of 0/255.
inline at::Tensor source(int64_t h, int64_t w) {
  at::Tensor img = at::empty({h, w, 3}, at::kByte);
  auto a = img.accessor<uint8_t, 3>();
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      a[y][x][0] = static_cast<uint8_t>((x * 7 + y * 3) % 256);
      a[y][x][1] = static_cast<uint8_t>((x * x + 2 * y * y) % 256);
      a[y][x][2] = static_cast<uint8_t>((((x / 4) + (y / 4)) % 2) * 255);
    }
  return img;
}

inline at::Tensor from_hex(const std::string& hex, int64_t h, int64_t w) {
  REQUIRE(hex.size() == static_cast<size_t>(h * w * 3 * 2));
  at::Tensor t = at::empty({h, w, 3}, at::kByte);
  for (size_t i = 0; i < hex.size() / 2; ++i) t.data_ptr<uint8_t>()[i] = static_cast<uint8_t>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  return t;
}

// Expected pixels computed with Pillow 9.4.0 (Debian bookworm python3-pil), independently of this code:
//   img = Image.fromarray(source(h, w)); np.asarray(img.resize((W, H), Image.BICUBIC)).tobytes().hex()
// (the crop cases use img.crop(...) / array slicing exactly as torchvision's CenterCrop/resized_crop do):
//   a = src(23, 31)                                   # same formula as source() above, np.uint8
//   A: Image.fromarray(a).resize((12, 9), BICUBIC)     B: Image.fromarray(src(6, 8)).resize((9, 11), BICUBIC)
//   C: np.asarray(Image.fromarray(a).resize((13, 10), BICUBIC))[0:10, 2:12]
//   D: Image.fromarray(a).crop((5, 3, 25, 17)).resize((8, 8), BICUBIC)
//   E: Image.fromarray(a).resize((4, 3), BICUBIC)
// A: 23x31 -> Resize(9) = 9x12 (downscale, antialiased support).
inline const char* kExpectedA =
    "080300190d722c26ff3e4b0e507d5262c3ff74422486633698b1ffaa5040bd9820ce54ff10176e21217e343a91465f7258967a6ac4917c3c"
    "748e7e76a09e91b25e78c5a674d667911846ff29508d3c69004e95ee60cbac7274008448d996b1c8a85500ba8abecd6fddde8f001f991f30"
    "a37643bce055b331676c607947e08ba4409d814caf62e0c19953d4653de58be027aa4838837a4b5eb75d4d536f716e81a5b7937d5ba55e62"
    "b78cb7c95366dc955aed5fb72f6fff40798e5390006597f47784ae896d009b73dead95ccbf5b00d192c2e489e2f87e0036523d475d795a75"
    "c26c684a7e776a9086c2a26854b4755cc696c2d86c61f28352b966c23e832b4f9077628ad474773b8670649873d4aa8448bc8653ce7ad4e2"
    "8659ec8c454078d44680ff578b8c6a9e007c75e88e79aaa06900b282d4c46fc4d66a00ee77bbc981d8098900";
// B: 6x8 -> 11x9 (upscale, plain a = -0.5 cubic).
inline const char* kExpectedB =
    "0000000601000c0300120700190c801f13ff251cff2b26ff3131ff0100000701000d03001307001a0c802013ff261cff2c26ff3231ff0301"
    "000902000f04001508001c0d802214ff281dff2e27ff3432ff0404000a0500100700160b001d10802317ff2920ff2f2aff3535ff0608000c"
    "0900120b00180f001f1480251bff2b24ff312eff3739ff080d000e0e001410001a14002119802720ff2d29ff3333ff393eff0913070f1407"
    "1516071b1a07221f802826f82e2ff83439f83a44f80b1a9c111b9c171d9c1d219c2426802a2d633036633640633c4b630c23ff1224ff1826"
    "ff1e2aff252f802b3600313f003749003d54000e2eff142fff1a31ff2035ff273a802d4100334a003954003f5f000f33ff1534ff1b36ff21"
    "3aff283f802e4600344f003a5900406400";
// C: 23x31 -> Resize(10) = 10x13, CenterCrop(10) (left = round(1.5) = 2).
inline const char* kExpectedC =
    "281fff393e544a6a005aa9f96b9cbd7c27008c92a19d96ffae590dbf953c2f2fbd404e6c517a4461bcb6728f9b83374293a38fa489bdb56a"
    "4cc6a6613655004774ae58a7ff68cc0079423d8a63ff9ab35bab4200bc96fbcd71c93d97854eba7e5fc37a6f5885804b8291ac7aa18181b2"
    "5c85c3a77bd4587d44a8ff558052663d00765dff87afc1988800a84aa3b99cffca5506db8a384a41355b66976c93c87cb63d8d635e9e5fca"
    "aea06dbf4f35d088bee194a551ab12628ba27369ea835e1e94804ea58eedb56864c67e12d781dce982b65865fc6974587a84078a8dee9b65"
    "b8ac6803bc9c9ecd7ffcde8316f77b415f99b270656f81724f9171aca27d96b38a4dc3768cd47bb2e87f55df946666a4007780ab8881ff98"
    "6105a97442ba86ffca625edb7200f476f3b57fc4";
// D: crop box (top 3, left 5, 14x20) of 23x31 resized to 8x8 (torchvision resized_crop on PIL).
inline const char* kExpectedD =
    "33398d435b77558c7767c88d78517d8a60739cb28bac50843856004878d75aafda6cbe007d329f8f88ffa19000b145513e81294ea7b560d8"
    "b6725429834f9395b8d1a76430b7706343c5ff53c82f65662d773eff8898629a9c05ac48f7bcadaa488fff58452f6a3f2d7c8dff8dbe629f"
    "4405b18af7c170aa4d3b295d69b56fa7b681b629924193a479d1b68f30c63f6353b00063aed77579da875400987b9faaaaffbc5500cc8c51"
    "587e8d6842777a50778c978d9d8c7daf4473c1958bd16b84";
// E: 23x31 -> 3x4 (large downscale factor: support 2 * 7.7 input pixels).
inline const char* kExpectedE = "243d7c588480907980c47d803a85806e7e7fa67a7fda7b7f507e8084777fc17b7fbf7e7f";

// Passes when every channel value is within 1/255 of PIL's (in practice they are identical).
inline void require_within_one(const at::Tensor& actual, const at::Tensor& expected) {
  REQUIRE(actual.sizes() == expected.sizes());
  const auto diff = (actual.to(at::kInt) - expected.to(at::kInt)).abs();
  INFO("max |diff| = " << diff.max().item<int>() << ", differing values: " << (diff > 0).sum().item<int64_t>());
  REQUIRE(diff.max().item<int>() <= 1);
}

}  // namespace test_data_transforms

TEST_CASE("resize_bicubic matches PIL's antialiased bicubic resize within 1/255", "[data][transforms]") {
  using namespace test_data_transforms;
  using taxon::data::resize_bicubic;
  const at::Tensor a = source(23, 31);
  const auto [h, w] = taxon::data::shortest_side_size(23, 31, 9);
  CHECK(h == 9);
  CHECK(w == 12);
  require_within_one(resize_bicubic(a, 9, 12), from_hex(kExpectedA, 9, 12));
  require_within_one(resize_bicubic(source(6, 8), 11, 9), from_hex(kExpectedB, 11, 9));
  require_within_one(resize_bicubic(a, 8, 8, taxon::data::Box{3, 5, 14, 20}), from_hex(kExpectedD, 8, 8));
  require_within_one(resize_bicubic(a, 3, 4), from_hex(kExpectedE, 3, 4));
  // Identity size is a copy.
  CHECK(at::equal(resize_bicubic(a, 23, 31), a));
}

TEST_CASE("resize + center crop (CLIP preprocessing) matches PIL, fused or step by step", "[data][transforms]") {
  using namespace test_data_transforms;
  using namespace taxon::data;
  const at::Tensor a = source(23, 31);
  Rng rng(0);
  const at::Tensor fused = resize_center_crop(10, 10)(a, rng);
  const at::Tensor stepwise = center_crop(10, 10)(resize_shortest(10)(a, rng), rng);
  require_within_one(fused, from_hex(kExpectedC, 10, 10));
  CHECK(at::equal(fused, stepwise));
  CHECK(center_offset(3, 0) == 2);  // round-half-even like Python's round(1.5) = 2
  CHECK(center_offset(5, 0) == 2);  // round(2.5) = 2

  // clip_eval = that crop, ToTensor, Normalize with the CLIP statistics.
  const at::Tensor out = clip_eval(10)(a, rng);
  REQUIRE(out.sizes() == at::IntArrayRef({3, 10, 10}));
  const at::Tensor expected_u8 = from_hex(kExpectedC, 10, 10);
  const at::Tensor mean = at::tensor({0.48145466, 0.4578275, 0.40821073}, at::kDouble).view({3, 1, 1});
  const at::Tensor stdev = at::tensor({0.26862954, 0.26130258, 0.27577711}, at::kDouble).view({3, 1, 1});
  const at::Tensor expected = (expected_u8.permute({2, 0, 1}).to(at::kDouble) / 255.0 - mean) / stdev;
  REQUIRE_TENSORS_CLOSE(out, expected, 0, 1e-5);
  // Batched application.
  const at::Tensor batch = apply_batch(clip_eval(10), at::stack({a, a}));
  REQUIRE(batch.sizes() == at::IntArrayRef({2, 3, 10, 10}));
  REQUIRE_TENSORS_CLOSE(batch[1], expected, 0, 1e-5);
}

TEST_CASE("timm/UNICOM eval resizes to res / crop_pct before cropping", "[data][transforms]") {
  using namespace taxon::data;
  const at::Tensor img = test_data_transforms::source(300, 400);
  Rng rng(0);
  // crop_pct 224/256 at 224: shorter side -> 256, then a 224 center crop.
  const at::Tensor direct = resize_center_crop(256, 224)(img, rng);
  const at::Tensor via_preset = timm_eval(224)(img, rng);
  REQUIRE(via_preset.sizes() == at::IntArrayRef({3, 224, 224}));
  const at::Tensor expected = normalize(kClipMean, kClipStd)(direct, rng);
  REQUIRE_TENSORS_CLOSE(via_preset, expected, 0, 0);
  // Above 224 the crop_pct is 1.0: same as CLIP's resize + crop.
  REQUIRE_TENSORS_CLOSE(timm_eval(256)(img, rng), clip_eval(256)(img, rng), 0, 0);
}

TEST_CASE("small-image path: 28x28 grey to 32x32 normalised without any 224 resize", "[data][transforms]") {
  using namespace taxon::data;
  at::Tensor grey = at::arange(28 * 28, at::kInt).remainder(256).to(at::kByte).view({28, 28, 1});
  Rng rng(1);
  const auto t = small_image(32, {0.2860}, {0.3530});
  const at::Tensor out = t(grey, rng);
  REQUIRE(out.sizes() == at::IntArrayRef({1, 32, 32}));
  const at::Tensor resized = resize_bicubic(grey, 32, 32);
  REQUIRE_TENSORS_CLOSE(out, (resized.permute({2, 0, 1}).to(at::kDouble) / 255.0 - 0.2860) / 0.3530, 0, 1e-5);
  // Grey with RGB statistics becomes 3 channels; already-32 images are not resampled.
  const at::Tensor rgb = small_image(32, {0.5, 0.5, 0.5}, {0.5, 0.5, 0.5})(resized, rng);
  REQUIRE(rgb.sizes() == at::IntArrayRef({3, 32, 32}));
  REQUIRE_TENSORS_CLOSE(rgb[2], (resized.select(2, 0).to(at::kDouble) / 255.0 - 0.5) / 0.5, 0, 1e-5);
}

TEST_CASE("random transforms are deterministic per (seed, epoch, index) and vary across them", "[data][transforms]") {
  using namespace taxon::data;
  const at::Tensor img = test_data_transforms::source(60, 80);
  const Compose train = clip_train(32, /*jitter=*/0.4);
  const at::Tensor a = train.apply(img, 7, 0, 5);
  const at::Tensor b = train.apply(img, 7, 0, 5);
  REQUIRE(a.sizes() == at::IntArrayRef({3, 32, 32}));
  CHECK(at::equal(a, b));
  int differing = 0;
  for (uint64_t i = 0; i < 8; ++i) differing += at::equal(train.apply(img, 7, 1, i), a) ? 0 : 1;
  CHECK(differing == 8);

  // RandomResizedCrop boxes stay inside the image and respect the scale range.
  Rng rng(3);
  for (int i = 0; i < 200; ++i) {
    const Box box = random_resized_crop_box(60, 80, rng, {0.08, 1.0}, {3.0 / 4.0, 4.0 / 3.0});
    REQUIRE(box.top >= 0);
    REQUIRE(box.left >= 0);
    REQUIRE(box.top + box.height <= 60);
    REQUIRE(box.left + box.width <= 80);
    REQUIRE(box.height * box.width >= 0.05 * 60 * 80);
  }
  // Flip with p = 1 mirrors columns.
  const at::Tensor flipped = horizontal_flip(1.0)(img, rng);
  CHECK(at::equal(flipped.select(1, 0), img.select(1, 79)));
}

TEST_CASE("transforms reject tensors that are not uint8 HWC", "[data][transforms]") {
  using namespace taxon::data;
  Rng rng(0);
  REQUIRE_TAXON_ERROR(resize_shortest(10)(at::zeros({3, 8, 8}), rng), "data.bad-image");
  REQUIRE_TAXON_ERROR(center_crop(20, 20)(at::zeros({8, 8, 3}, at::kByte), rng), "data.bad-box");
  REQUIRE_TAXON_ERROR(normalize({0.5, 0.5}, {0.5, 0.5})(at::zeros({8, 8, 3}, at::kByte), rng), "data.bad-normalize");
}

namespace test_data_transforms {
// Plain two-pass Pillow algorithm with the scalar kernels only (no SIMD, no windowing): the reference the
// vectorised path must reproduce bit for bit.
inline at::Tensor scalar_resize(const at::Tensor& img, int64_t oh, int64_t ow) {
  using namespace taxon::data::detail;
  const int64_t H = img.size(0), W = img.size(1);
  const auto hc = bicubic_coeffs(W, ow, 0, ow);
  const auto vc = bicubic_coeffs(H, oh, 0, oh);
  std::vector<uint8_t> tmp(static_cast<size_t>(H * ow * 3));
  for (int64_t r = 0; r < H; ++r) resample_row_horizontal<3>(img.data_ptr<uint8_t>() + r * W * 3, hc, ow, tmp.data() + r * ow * 3);
  at::Tensor out = at::empty({oh, ow, 3}, at::kByte);
  resample_vertical_scalar(tmp.data(), ow * 3, 0, ow * 3, 0, vc, oh, out.data_ptr<uint8_t>());
  return out;
}
}  // namespace test_data_transforms

TEST_CASE("vectorised resize equals the scalar Pillow algorithm on random images", "[data][transforms]") {
  const auto gen = at::make_generator<at::CPUGeneratorImpl>(17);
  // Odd row counts and row lengths that are not multiples of 64/32/16 bytes exercise every kernel's hand-off.
  const int64_t cases[][4] = {{375, 500, 224, 298}, {37, 61, 9, 17}, {20, 20, 33, 47}, {7, 300, 5, 3}, {101, 13, 64, 64},
                              {5, 6, 5, 13}, {235, 313, 224, 298}, {63, 700, 31, 250}};
  int checked = 0;
  for (const auto& cs : cases) {
    const int64_t h = cs[0], w = cs[1], oh = cs[2], ow = cs[3];
    const at::Tensor img = at::randint(0, 256, {h, w, 3}, gen, at::kByte);
    const at::Tensor expect = test_data_transforms::scalar_resize(img, oh, ow);
    for (auto isa : taxon::test::runnable_isas()) {
      INFO(h << "x" << w << " -> " << oh << "x" << ow << " isa=" << taxon::cpu::isa_name(isa));
      taxon::test::IsaScope scope(isa);
      CHECK(at::equal(taxon::data::resize_bicubic(img, oh, ow), expect));
      // A window (center crop) computes only its pixels, bit-identical to cropping the full result.
      const int64_t top = oh / 4, left = ow / 3, wh = std::max<int64_t>(1, oh / 2), ww = std::max<int64_t>(1, ow / 2);
      CHECK(at::equal(taxon::data::resize_bicubic(img, oh, ow, {}, taxon::data::Box{top, left, wh, ww}),
                      expect.slice(0, top, top + wh).slice(1, left, left + ww)));
      ++checked;
    }
  }
  CHECK(checked == 8 * static_cast<int>(taxon::test::runnable_isas().size()));
}

TEST_CASE("vectorised normalize equals the scalar formula", "[data][transforms]") {
  const auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  for (int64_t side : {1, 3, 17, 224}) {
    const at::Tensor img = at::randint(0, 256, {side, side + 2, 3}, gen, at::kByte);
    at::Tensor expect = at::empty({3, side, side + 2});
    for (int c = 0; c < 3; ++c) {
      const auto scale = static_cast<float>(1.0 / (255.0 * taxon::data::kClipStd[static_cast<size_t>(c)]));
      const auto shift = static_cast<float>(taxon::data::kClipMean[static_cast<size_t>(c)] / taxon::data::kClipStd[static_cast<size_t>(c)]);
      expect[c] = img.select(2, c).to(at::kFloat) * scale - shift;
    }
    for (auto isa : taxon::test::runnable_isas()) {
      INFO("side " << side << " isa=" << taxon::cpu::isa_name(isa));
      taxon::test::IsaScope scope(isa);
      taxon::data::Rng rng(0);
      CHECK(at::equal(taxon::data::normalize(taxon::data::kClipMean, taxon::data::kClipStd)(img, rng), expect));
    }
  }
}

TEST_CASE("to_chw + normalize_batch equal normalize bit for bit, on every ISA", "[data][transforms]") {
  using namespace taxon::data;
  const auto gen = at::make_generator<at::CPUGeneratorImpl>(6);
  Rng rng(0);
  const auto norm = normalize(kClipMean, kClipStd);
  for (int64_t side : {1, 5, 16, 33, 224}) {
    std::vector<at::Tensor> images, floats;
    for (int b = 0; b < 3; ++b) {
      images.push_back(at::randint(0, 256, {side, side + 3, 3}, gen, at::kByte));
      floats.push_back(norm(images.back(), rng));
    }
    for (auto isa : taxon::test::runnable_isas()) {
      INFO("side " << side << " isa=" << taxon::cpu::isa_name(isa));
      taxon::test::IsaScope scope(isa);
      std::vector<at::Tensor> planes;
      for (const auto& img : images) {
        planes.push_back(to_chw()(img, rng));
        CHECK(at::equal(planes.back(), img.permute({2, 0, 1})));
      }
      CHECK(at::equal(normalize_batch(at::stack(planes), kClipMean, kClipStd), at::stack(floats)));
    }
  }
  const at::Tensor grey = at::randint(0, 256, {7, 9, 1}, gen, at::kByte);
  const at::Tensor rgb = to_chw(3)(grey, rng);
  REQUIRE(rgb.sizes() == at::IntArrayRef({3, 7, 9}));
  CHECK(at::equal(rgb[2], grey.select(2, 0)));
  CHECK(at::equal(normalize_batch(rgb.unsqueeze(0), kClipMean, kClipStd)[0], norm(grey, rng)));
  REQUIRE_TAXON_ERROR(to_chw(3)(at::zeros({4, 4, 2}, at::kByte), rng), "data.bad-image");
  REQUIRE_TAXON_ERROR(normalize_batch(rgb, kClipMean, kClipStd), "data.bad-normalize");  // not a batch
  REQUIRE_TAXON_ERROR(normalize_batch(rgb.unsqueeze(0).to(at::kFloat), kClipMean, kClipStd), "data.bad-normalize");
  REQUIRE_TAXON_ERROR(normalize({0.5}, {0.0}), "data.bad-normalize");  // a zero std would divide by zero
  REQUIRE_TAXON_ERROR(normalize_batch(rgb.unsqueeze(0), {0.5, 0.5}, {0.5}), "data.bad-normalize");
}

TEST_CASE("apply_into: the final step writes into the given slot only when it fits, with the same values", "[data][transforms]") {
  using namespace taxon::data;
  Rng rng(0);
  const at::Tensor img = at::randint(0, 256, {8, 8, 3}, at::kByte);
  const auto norm = normalize(kClipMean, kClipStd);
  const at::Tensor expected = norm(img, rng);

  at::Tensor slot = at::zeros({3, 8, 8});
  const at::Tensor out = apply_into(norm, img, rng, slot);
  CHECK(out.data_ptr() == slot.data_ptr());
  CHECK(at::equal(slot, expected));
  // A Compose hands the slot to its last step only; nested Composes pass it on.
  slot.zero_();
  CHECK(apply_into(Compose{resize(8, 8), Compose{norm}}, img, rng, slot).data_ptr() == slot.data_ptr());
  CHECK(at::equal(slot, expected));
  at::Tensor bytes = at::zeros({3, 8, 8}, at::kByte);
  CHECK(apply_into(Compose{resize(8, 8), to_chw()}, img, rng, bytes).data_ptr() == bytes.data_ptr());
  CHECK(at::equal(bytes, img.permute({2, 0, 1})));
  CHECK(apply_into(clip_eval(8), img, rng, slot).data_ptr() == slot.data_ptr());
  CHECK(at::equal(slot, clip_eval(8)(img, rng)));

  // Left untouched, with a new tensor returned: a slot of another shape or dtype, a non-contiguous one, no slot,
  // and a last step that cannot write into one (here normalize is followed by a step of the user's).
  const auto untouched = [&](const TransformFn& t, at::Tensor target, const at::Tensor& want) {
    const at::Tensor before = target.clone();
    const at::Tensor got = apply_into(t, img, rng, target);
    CHECK(got.data_ptr() != target.data_ptr());
    CHECK(at::equal(got, want));
    CHECK(at::equal(target, before));
  };
  untouched(norm, at::zeros({3, 4, 4}), expected);
  untouched(norm, at::zeros({3, 8, 8}, at::kDouble), expected);
  untouched(norm, at::zeros({8, 3, 8}).transpose(0, 1), expected);
  untouched(to_chw(), at::zeros({3, 8, 8}), img.permute({2, 0, 1}));
  untouched(Compose{norm, [](const at::Tensor& t, Rng&) { return t * 1.0; }}, at::zeros({3, 8, 8}), expected);
  CHECK(at::equal(apply_into(norm, img, rng, at::Tensor()), expected));
  CHECK(at::equal(apply_into(Compose{}, img, rng, slot), img));
}
