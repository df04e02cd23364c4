#pragma once
// The PIL-exact resampling engine behind every resize in taxon. resize_bicubic reproduces PIL's
// Image.resize(BICUBIC) — what torchvision's Resize and CLIP/open_clip/timm preprocessing do on PIL images — bit
// for bit: Keys cubic with a = -0.5, support scaled by the downscale factor (antialiasing), coefficients
// normalised then rounded to 22-bit fixed point, horizontal pass first with rounding to uint8 in between
// (Pillow's Resample.c). It can compute only a window of the output, so resize + center crop never computes
// pixels the crop throws away. Scalar, SSE2 and (resample_avx.hpp) AVX2/AVX-512 kernels, all bit-identical.
#include "taxon/core/error.hpp"
#include "taxon/data/box.hpp"
#include "taxon/data/recycle.hpp"

#include <ATen/ATen.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <tuple>
#include <utility>
#include <vector>

namespace taxon::data {

namespace detail {

inline constexpr int kPrecisionBits = 32 - 8 - 2;  // Pillow's PRECISION_BITS for 8-bit images

inline double pil_bicubic(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

struct ResampleCoeffs {
  int ksize = 0;
  std::vector<int> first, count;  // per output position: first input index and number of taps
  std::vector<int32_t> weights;   // [outputs, ksize] fixed point
};

// Pillow's precompute_coeffs for outputs [begin, begin+n) of an in_size -> out_size resize: the normalised
// weights in double, as its 32-bit ("I", "F") resize uses them.
struct ResampleCoeffsDouble {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<double> weights;  // [outputs, ksize]
};

inline ResampleCoeffsDouble bicubic_coeffs_double(int64_t in_size, int64_t out_size, int64_t begin, int64_t n) {
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = 2.0 * filterscale;
  ResampleCoeffsDouble c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(static_cast<size_t>(n));
  c.count.resize(static_cast<size_t>(n));
  c.weights.assign(static_cast<size_t>(n * c.ksize), 0.0);
  const double ss = 1.0 / filterscale;
  for (int64_t i = 0; i < n; ++i) {
    const double center = (static_cast<double>(begin + i) + 0.5) * scale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = static_cast<int>(in_size);
    xmax -= xmin;
    double* k = c.weights.data() + i * c.ksize;
    double total = 0.0;
    for (int x = 0; x < xmax; ++x) {
      k[x] = pil_bicubic((x + xmin - center + 0.5) * ss);
      total += k[x];
    }
    if (total != 0.0)
      for (int x = 0; x < xmax; ++x) k[x] /= total;
    c.first[static_cast<size_t>(i)] = xmin;
    c.count[static_cast<size_t>(i)] = xmax;
  }
  return c;
}

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for outputs [begin, begin+n) of an in_size -> out_size resize.
inline ResampleCoeffs bicubic_coeffs(int64_t in_size, int64_t out_size, int64_t begin, int64_t n) {
  const ResampleCoeffsDouble d = bicubic_coeffs_double(in_size, out_size, begin, n);
  ResampleCoeffs c;
  c.ksize = d.ksize;
  c.first = d.first;
  c.count = d.count;
  c.weights.assign(d.weights.size(), 0);
  for (int64_t i = 0; i < n; ++i)
    for (int x = 0; x < c.count[static_cast<size_t>(i)]; ++x) {
      const double v = d.weights[static_cast<size_t>(i * c.ksize + x)];
      c.weights[static_cast<size_t>(i * c.ksize + x)] =
          v < 0 ? static_cast<int32_t>(-0.5 + v * (1 << kPrecisionBits)) : static_cast<int32_t>(0.5 + v * (1 << kPrecisionBits));
    }
  return c;
}

inline uint8_t clip8(int32_t v) {
  if (v >= (1 << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return static_cast<uint8_t>(v >> kPrecisionBits);
}

template <int C>
void resample_row_horizontal(const uint8_t* in, const ResampleCoeffs& c, int64_t outputs, uint8_t* out) {
  for (int64_t i = 0; i < outputs; ++i) {
    const int32_t* k = c.weights.data() + i * c.ksize;
    const uint8_t* p = in + static_cast<int64_t>(c.first[static_cast<size_t>(i)]) * C;
    const int n = c.count[static_cast<size_t>(i)];
    int32_t s[C];
    for (int ch = 0; ch < C; ++ch) s[ch] = 1 << (kPrecisionBits - 1);
    for (int t = 0; t < n; ++t)
      for (int ch = 0; ch < C; ++ch) s[ch] += static_cast<int32_t>(p[t * C + ch]) * k[t];
    for (int ch = 0; ch < C; ++ch) out[i * C + ch] = clip8(s[ch]);
  }
}

// Output position i of one RGB row (the scalar algorithm), for the few outputs a grouped kernel leaves over.
inline void resample_one_rgb(const uint8_t* in, const ResampleCoeffs& c, int64_t i, uint8_t* out) {
  const int32_t* k = c.weights.data() + i * c.ksize;
  const uint8_t* p = in + static_cast<int64_t>(c.first[static_cast<size_t>(i)]) * 3;
  for (int ch = 0; ch < 3; ++ch) {
    int32_t s = 1 << (kPrecisionBits - 1);
    for (int t = 0; t < c.count[static_cast<size_t>(i)]; ++t) s += static_cast<int32_t>(p[t * 3 + ch]) * k[t];
    out[i * 3 + ch] = clip8(s);
  }
}

#if defined(__SSE2__)
// SSE2 kernels. PIL's 22-bit weights do not fit int16, so each weight is split exactly as k = hi * 2^11 + lo
// (lo in [0, 2048)) and sum(v * k) = 2^11 * sum(v * hi) + sum(v * lo), each half computed with pmaddwd on pairs
// of taps. Integer arithmetic throughout, so results stay bit-identical to the scalar (= Pillow) path.
inline constexpr int kSplitBits = 11;

// The (hi, lo) halves of two taps' weights as one pmaddwd word pair each: tap t in the low 16 bits, t+1 above.
inline int32_t weight_pair_hi(int32_t k0, int32_t k1) {
  return static_cast<int32_t>((static_cast<uint32_t>(static_cast<uint16_t>(k1 >> kSplitBits)) << 16) |
                              static_cast<uint16_t>(k0 >> kSplitBits));
}
inline int32_t weight_pair_lo(int32_t k0, int32_t k1) {
  return static_cast<int32_t>((static_cast<uint32_t>(k1 & ((1 << kSplitBits) - 1)) << 16) |
                              static_cast<uint32_t>(k0 & ((1 << kSplitBits) - 1)));
}

// Per output position, per pair of taps: 16-bit (hi, lo) weights laid out for pmaddwd.
struct PairWeights {
  std::vector<int16_t> hi, lo;  // [outputs, pairs, 8]
  int pairs = 0;
};

inline PairWeights pair_weights(const ResampleCoeffs& c, int64_t outputs, int lanes_per_tap_pair) {
  PairWeights w;
  w.pairs = (c.ksize + 1) / 2;
  w.hi.assign(static_cast<size_t>(outputs * w.pairs * 8), 0);
  w.lo.assign(static_cast<size_t>(outputs * w.pairs * 8), 0);
  for (int64_t i = 0; i < outputs; ++i) {
    const int32_t* k = c.weights.data() + i * c.ksize;
    const int n = c.count[static_cast<size_t>(i)];
    for (int p = 0; p < w.pairs; ++p)
      for (int lane = 0; lane < lanes_per_tap_pair; ++lane)
        for (int half = 0; half < 2; ++half) {
          const int t = 2 * p + half;
          const int32_t kt = t < n ? k[t] : 0;
          const size_t at = static_cast<size_t>((i * w.pairs + p) * 8 + lane * 2 + half);
          w.hi[at] = static_cast<int16_t>(kt >> kSplitBits);
          w.lo[at] = static_cast<int16_t>(kt & ((1 << kSplitBits) - 1));
        }
  }
  return w;
}

// Tables for the AVX-512 VBMI horizontal kernel: outputs in groups of 4 (one per 128-bit lane) read one 64-byte
// window of the row, and per tap pair a byte permute builds the pmaddwd operand of all 4 from it. Usable when
// every group's taps fit in 21 pixels (63 bytes): downscales up to about 2x, e.g. CLIP's 500 -> 298.
struct QuadGather {
  int pairs = 0;                  // tap pairs per group (the group's maximum)
  int64_t groups = 0;             // outputs / 4; the last outputs % 4 are left to other kernels
  std::vector<int32_t> base;      // [groups] first pixel of each group's window
  std::vector<uint8_t> index;     // [groups, pairs, 64] byte of the window for each int16 slot (low bytes)
  std::vector<int16_t> hi, lo;    // [groups, pairs, 32] the split weights, slots as index
  bool usable = false;
};

inline QuadGather quad_gather(const ResampleCoeffs& c, int64_t outputs) {
  QuadGather g;
  g.groups = outputs / 4;
  if (g.groups == 0) return g;
  for (int64_t i = 0; i < g.groups * 4; ++i) g.pairs = std::max(g.pairs, (c.count[static_cast<size_t>(i)] + 1) / 2);
  g.base.resize(static_cast<size_t>(g.groups));
  g.index.assign(static_cast<size_t>(g.groups * g.pairs * 64), 0);
  g.hi.assign(static_cast<size_t>(g.groups * g.pairs * 32), 0);
  g.lo.assign(static_cast<size_t>(g.groups * g.pairs * 32), 0);
  for (int64_t q = 0; q < g.groups; ++q) {
    const int base = c.first[static_cast<size_t>(4 * q)];
    g.base[static_cast<size_t>(q)] = base;
    for (int lane = 0; lane < 4; ++lane) {
      const auto i = static_cast<size_t>(4 * q + lane);
      const int offset = c.first[i] - base, n = c.count[i];
      if (offset < 0 || (offset + n) * 3 > 64) return QuadGather{};  // taps outside the window: not usable
      const int32_t* k = c.weights.data() + static_cast<int64_t>(i) * c.ksize;
      for (int p = 0; p < g.pairs; ++p)
        for (int ch = 0; ch < 3; ++ch)
          for (int half = 0; half < 2; ++half) {
            const int t = 2 * p + half, slot = lane * 8 + ch * 2 + half;
            const size_t at = static_cast<size_t>((q * g.pairs + p) * 32 + slot);
            g.index[static_cast<size_t>((q * g.pairs + p) * 64 + 2 * slot)] = static_cast<uint8_t>(((offset + t) * 3 + ch) & 63);
            const int32_t kt = t < n ? k[t] : 0;  // taps past the count weigh 0, whatever byte they read
            g.hi[at] = static_cast<int16_t>(kt >> kSplitBits);
            g.lo[at] = static_cast<int16_t>(kt & ((1 << kSplitBits) - 1));
          }
    }
  }
  g.usable = true;
  return g;
}

inline __m128i load3px(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);  // 3 bytes used; the caller guarantees the 4th is readable
  return _mm_cvtsi32_si128(v);
}

// One RGB row: lanes hold (R_t, R_t+1, G_t, G_t+1, B_t, B_t+1, -, -). Reads up to 4 bytes past the last tap.
inline void resample_row_horizontal_rgb_sse2(const uint8_t* in, const ResampleCoeffs& c, const PairWeights& w,
                                             int64_t outputs, uint8_t* out) {
  const __m128i zero = _mm_setzero_si128();
  for (int64_t i = 0; i < outputs; ++i) {
    const uint8_t* p = in + static_cast<int64_t>(c.first[static_cast<size_t>(i)]) * 3;
    const int pairs = (c.count[static_cast<size_t>(i)] + 1) / 2;
    const int16_t* wh = w.hi.data() + i * w.pairs * 8;
    const int16_t* wl = w.lo.data() + i * w.pairs * 8;
    __m128i acc_hi = zero, acc_lo = zero;
    for (int q = 0; q < pairs; ++q) {
      const __m128i px = _mm_unpacklo_epi8(_mm_unpacklo_epi8(load3px(p + 6 * q), load3px(p + 6 * q + 3)), zero);
      acc_hi = _mm_add_epi32(acc_hi, _mm_madd_epi16(px, _mm_loadu_si128(reinterpret_cast<const __m128i*>(wh + 8 * q))));
      acc_lo = _mm_add_epi32(acc_lo, _mm_madd_epi16(px, _mm_loadu_si128(reinterpret_cast<const __m128i*>(wl + 8 * q))));
    }
    __m128i s = _mm_add_epi32(_mm_add_epi32(_mm_slli_epi32(acc_hi, kSplitBits), acc_lo), _mm_set1_epi32(1 << (kPrecisionBits - 1)));
    s = _mm_srai_epi32(s, kPrecisionBits);
    s = _mm_packus_epi16(_mm_packs_epi32(s, s), zero);  // saturation = Pillow's clip8
    const int32_t rgb = _mm_cvtsi128_si32(s);
    std::memcpy(out + i * 3, &rgb, 3);
  }
}

// Vertical pass over a contiguous row strip of 16 bytes: rows (t, t+1) interleaved into pmaddwd pairs.
inline int64_t resample_vertical_sse2(const uint8_t* src, int64_t src_stride, int64_t row0, int64_t row_len, int64_t j_begin,
                                   const ResampleCoeffs& c, int64_t outputs, uint8_t* dst) {
  const __m128i zero = _mm_setzero_si128();
  const __m128i bias = _mm_set1_epi32(1 << (kPrecisionBits - 1));
  const int64_t vec_end = j_begin + (row_len - j_begin) / 16 * 16;
  for (int64_t i = 0; i < outputs; ++i) {
    const int32_t* k = c.weights.data() + i * c.ksize;
    const int64_t first = c.first[static_cast<size_t>(i)] - row0;
    const int n = c.count[static_cast<size_t>(i)];
    uint8_t* out = dst + i * row_len;
    for (int64_t j = j_begin; j < vec_end; j += 16) {
      __m128i hi[4] = {zero, zero, zero, zero}, lo[4] = {zero, zero, zero, zero};
      for (int t = 0; t < n; t += 2) {
        const int32_t k0 = k[t], k1 = t + 1 < n ? k[t + 1] : 0;
        const uint8_t* ra = src + (first + t) * src_stride + j;
        const uint8_t* rb = t + 1 < n ? ra + src_stride : ra;
        const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(ra));
        const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(rb));
        const __m128i wh = _mm_set1_epi32(weight_pair_hi(k0, k1)), wl = _mm_set1_epi32(weight_pair_lo(k0, k1));
        const __m128i ab_lo = _mm_unpacklo_epi8(a, b), ab_hi = _mm_unpackhi_epi8(a, b);
        const __m128i v[4] = {_mm_unpacklo_epi8(ab_lo, zero), _mm_unpackhi_epi8(ab_lo, zero), _mm_unpacklo_epi8(ab_hi, zero),
                              _mm_unpackhi_epi8(ab_hi, zero)};
        for (int q = 0; q < 4; ++q) {
          hi[q] = _mm_add_epi32(hi[q], _mm_madd_epi16(v[q], wh));
          lo[q] = _mm_add_epi32(lo[q], _mm_madd_epi16(v[q], wl));
        }
      }
      __m128i s[4];
      for (int q = 0; q < 4; ++q)
        s[q] = _mm_srai_epi32(_mm_add_epi32(_mm_add_epi32(_mm_slli_epi32(hi[q], kSplitBits), lo[q]), bias), kPrecisionBits);
      const __m128i packed = _mm_packus_epi16(_mm_packs_epi32(s[0], s[1]), _mm_packs_epi32(s[2], s[3]));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j), packed);
    }
  }
  return vec_end;
}
#endif

// Coefficients of one resampling pass, plus (x86) their pmaddwd layout for RGB rows, built on first use.
struct CoeffEntry {
  ResampleCoeffs coeffs;
#if defined(__SSE2__)
  const PairWeights& rgb_pairs() const {
    if (!pairs_ready) {
      pairs = pair_weights(coeffs, static_cast<int64_t>(coeffs.first.size()), 3);
      pairs_ready = true;
    }
    return pairs;
  }
  const QuadGather& rgb_quads() const {
    if (!quads_ready) {
      quads = quad_gather(coeffs, static_cast<int64_t>(coeffs.first.size()));
      quads_ready = true;
    }
    return quads;
  }
  mutable PairWeights pairs;
  mutable QuadGather quads;
  mutable bool pairs_ready = false, quads_ready = false;
#endif
};

// A dataset's images mostly share a size, so each thread keeps its last few coefficient sets: computing them
// (doubles, divisions, two allocations) costs as much as a quarter of the resize itself. Callers hold the
// shared_ptr, so a later miss that recycles the slot cannot pull the coefficients from under them.
// `shift` is subtracted from every first index (the caller's buffer starts `shift` pixels into the source).
inline std::shared_ptr<const CoeffEntry> cached_coeffs(int64_t in_size, int64_t out_size, int64_t begin, int64_t n,
                                                       int64_t shift = 0) {
  struct Slot {
    std::array<int64_t, 5> key{-1, -1, -1, -1, -1};
    std::shared_ptr<const CoeffEntry> entry;
  };
  constexpr std::size_t kSlots = 8;
  thread_local std::array<Slot, kSlots> slots;
  thread_local std::size_t next = 0;
  const std::array<int64_t, 5> key{in_size, out_size, begin, n, shift};
  for (auto& slot : slots)
    if (slot.key == key) return slot.entry;
  auto entry = std::make_shared<CoeffEntry>();
  entry->coeffs = bicubic_coeffs(in_size, out_size, begin, n);
  for (int& f : entry->coeffs.first) f -= static_cast<int>(shift);
  Slot& slot = slots[next++ % kSlots];
  slot.key = key;
  slot.entry = entry;
  return entry;
}

}  // namespace detail
}  // namespace taxon::data

#include "taxon/data/resample_avx.hpp"

namespace taxon::data {
namespace detail {

template <int C>
void resample_rows_horizontal(const uint8_t* src, int64_t src_stride, int64_t rows, const CoeffEntry& e,
                              int64_t outputs, uint8_t* dst, const uint8_t* readable_end) {
  const ResampleCoeffs& c = e.coeffs;
#if defined(__SSE2__)
  if constexpr (C == 3) {
    const PairWeights& w = e.rgb_pairs();
    int64_t max_end = 0;  // furthest byte the SIMD kernel touches, relative to the row start
    for (int64_t i = 0; i < outputs; ++i)
      max_end = std::max<int64_t>(max_end, (c.first[static_cast<size_t>(i)] + 2 * ((c.count[static_cast<size_t>(i)] + 1) / 2)) * 3 + 1);
    int64_t r = 0;
#if defined(TAXON_SIMD_X86_DISPATCH)
    using taxon::cpu::Isa;
    if (taxon::cpu::active_at_least(Isa::avx2)) {
      int64_t quad_end = 0;  // the wide kernels load 16 bytes per 4 taps
      for (int64_t i = 0; i < outputs; ++i) quad_end = std::max(quad_end, rgb_quad_read_end(c, i));
      const int64_t row_bytes = outputs * 3;
      if (taxon::cpu::active_at_least(Isa::avx512_vnni) && e.rgb_quads().usable) {
        const QuadGather& quads = e.rgb_quads();
        resample_rows_horizontal_rgb_vbmi(src, src_stride, rows, readable_end, quads, dst, row_bytes);
        for (; r < rows; ++r)
          for (int64_t i = quads.groups * 4; i < outputs; ++i) resample_one_rgb(src + r * src_stride, c, i, dst + r * row_bytes);
      }
      if (taxon::cpu::active_at_least(Isa::avx512)) {
        for (; r + 4 <= rows && src + (r + 3) * src_stride + quad_end <= readable_end; r += 4) {
          uint8_t* const out[4] = {dst + r * row_bytes, dst + (r + 1) * row_bytes, dst + (r + 2) * row_bytes,
                                   dst + (r + 3) * row_bytes};
          resample_rows_horizontal_rgb_avx512(src + r * src_stride, src_stride, c, w, outputs, out);
        }
      }
      for (; r + 2 <= rows && src + (r + 1) * src_stride + quad_end <= readable_end; r += 2)
        resample_rows_horizontal_rgb_avx2(src + r * src_stride, src_stride, c, w, outputs, dst + r * row_bytes,
                                          dst + (r + 1) * row_bytes);
    }
#endif
    for (; r < rows; ++r) {
      const uint8_t* in = src + r * src_stride;
      if (in + max_end <= readable_end) resample_row_horizontal_rgb_sse2(in, c, w, outputs, dst + r * outputs * 3);
      else resample_row_horizontal<3>(in, c, outputs, dst + r * outputs * 3);
    }
    return;
  }
#endif
  (void)readable_end;
  for (int64_t r = 0; r < rows; ++r) resample_row_horizontal<C>(src + r * src_stride, c, outputs, dst + r * outputs * C);
}

// `readable_end`: one past the last byte that may be read (the SIMD path reads a few bytes past a row's taps).
inline void resample_horizontal(int64_t channels, const uint8_t* src, int64_t src_stride, int64_t rows,
                                const CoeffEntry& c, int64_t outputs, uint8_t* dst, const uint8_t* readable_end) {
  switch (channels) {
    case 1: resample_rows_horizontal<1>(src, src_stride, rows, c, outputs, dst, readable_end); break;
    case 2: resample_rows_horizontal<2>(src, src_stride, rows, c, outputs, dst, readable_end); break;
    case 3: resample_rows_horizontal<3>(src, src_stride, rows, c, outputs, dst, readable_end); break;
    case 4: resample_rows_horizontal<4>(src, src_stride, rows, c, outputs, dst, readable_end); break;
    default: TAXON_FAIL("data.bad-image", "resize supports 1 to 4 channels, got ", channels);
  }
}

// Vertical pass: `src` row r is input row (row0 + r); columns [j_begin, row_len) of every output row.
inline void resample_vertical_scalar(const uint8_t* src, int64_t src_stride, int64_t row0, int64_t row_len,
                                     int64_t j_begin, const ResampleCoeffs& c, int64_t outputs, uint8_t* dst) {
  std::vector<int32_t> acc(static_cast<size_t>(row_len));
  for (int64_t i = 0; i < outputs; ++i) {
    const int32_t* k = c.weights.data() + i * c.ksize;
    const int64_t first = c.first[static_cast<size_t>(i)] - row0;
    const int n = c.count[static_cast<size_t>(i)];
    std::fill(acc.begin() + j_begin, acc.end(), 1 << (kPrecisionBits - 1));
    int32_t* a = acc.data();
    for (int t = 0; t < n; ++t) {
      const uint8_t* in = src + (first + t) * src_stride;
      const int32_t kt = k[t];
      for (int64_t j = j_begin; j < row_len; ++j) a[j] += static_cast<int32_t>(in[j]) * kt;
    }
    uint8_t* out = dst + i * row_len;
    for (int64_t j = j_begin; j < row_len; ++j) out[j] = clip8(a[j]);
  }
}

// The widest kernel takes the columns it can, each narrower one the rest, scalar code the last few bytes.
inline void resample_vertical(const uint8_t* src, int64_t src_stride, int64_t row0, int64_t row_len,
                              const ResampleCoeffs& c, int64_t outputs, uint8_t* dst) {
  int64_t j = 0;
#if defined(TAXON_SIMD_X86_DISPATCH)
  using taxon::cpu::Isa;
  if (taxon::cpu::active_at_least(Isa::avx512)) j = resample_vertical_avx512(src, src_stride, row0, row_len, j, c, outputs, dst);
  if (taxon::cpu::active_at_least(Isa::avx2)) j = resample_vertical_avx2(src, src_stride, row0, row_len, j, c, outputs, dst);
#endif
#if defined(__SSE2__)
  j = resample_vertical_sse2(src, src_stride, row0, row_len, j, c, outputs, dst);
#endif
  if (j < row_len) resample_vertical_scalar(src, src_stride, row0, row_len, j, c, outputs, dst);
}

inline void check_hwc_u8(const at::Tensor& image, const char* what) {
  TAXON_CHECK(image.dim() == 3 && image.scalar_type() == at::kByte, "data.bad-image", what,
              ": expects a [H,W,C] uint8 image, got ", image.sizes(), " ", image.scalar_type());
}

// [first, last) input positions a pass reads over all its outputs.
inline std::pair<int64_t, int64_t> input_span(const ResampleCoeffs& c) {
  int64_t first = c.first.empty() ? 0 : c.first.front(), last = first;
  for (std::size_t i = 0; i < c.first.size(); ++i) {
    first = std::min<int64_t>(first, c.first[i]);
    last = std::max<int64_t>(last, c.first[i] + c.count[i]);
  }
  return {first, last};
}

// The resize itself: the virtual in_h x in_w source has pixel (y, x) at img[y - vy][x - vx]; img need only hold
// the pixels the output window reads (a decoded region, or a full image with a source box at (-vy, -vx)).
inline at::Tensor resize_core(const at::Tensor& img, int64_t vy, int64_t vx, int64_t in_h, int64_t in_w, int64_t out_h,
                              int64_t out_w, Box window) {
  const int64_t H = img.size(0), W = img.size(1), C = img.size(2);
  const int64_t stride = W * C;
  const uint8_t* data = img.data_ptr<uint8_t>();
  const uint8_t* end = data + H * stride;
  const bool need_h = out_w != in_w, need_v = out_h != in_h;
  thread_local RecycledBuffers outputs;  // per-image buffers that glibc would otherwise trim and re-fault
  at::Tensor out = outputs.take({window.height, window.width, C});

  std::shared_ptr<const CoeffEntry> vertical, horizontal;
  auto [row_first, row_last] = std::pair{window.top - vy, window.top + window.height - vy};  // rows of img read
  if (need_v) {
    vertical = cached_coeffs(in_h, out_h, window.top, window.height, vy);
    std::tie(row_first, row_last) = input_span(vertical->coeffs);
  }
  auto [col_first, col_last] = std::pair{window.left - vx, window.left + window.width - vx};  // columns read
  if (need_h) {
    horizontal = cached_coeffs(in_w, out_w, window.left, window.width, vx);
    std::tie(col_first, col_last) = input_span(horizontal->coeffs);
  }
  TAXON_CHECK(row_first >= 0 && row_last <= H && col_first >= 0 && col_last <= W, "data.bad-box", "resize reads rows [",
              row_first, ", ", row_last, ") and columns [", col_first, ", ", col_last, ") of a ", H, "x", W, " buffer");
  const uint8_t* rows = data + (window.left - vx) * C;  // without a horizontal pass, the window is a plain crop
  int64_t rows_stride = stride, rows_origin = 0;
  thread_local std::vector<uint8_t> tmp;  // the horizontal pass's rows; reused: fresh pages cost ~12 µs each here
  if (need_h) {
    const int64_t n_rows = row_last - row_first;
    if (!need_v) {
      resample_horizontal(C, data + row_first * stride, stride, n_rows, *horizontal, window.width, out.data_ptr<uint8_t>(), end);
      return out;
    }
    if (tmp.size() < static_cast<size_t>(n_rows * window.width * C)) tmp.resize(static_cast<size_t>(n_rows * window.width * C));
    resample_horizontal(C, data + row_first * stride, stride, n_rows, *horizontal, window.width, tmp.data(), end);
    rows = tmp.data();
    rows_stride = window.width * C;
    rows_origin = row_first;
  }
  if (need_v) {
    resample_vertical(rows, rows_stride, rows_origin, window.width * C, vertical->coeffs, window.height,
                      out.data_ptr<uint8_t>());
  } else {
    for (int64_t r = 0; r < window.height; ++r)
      std::copy_n(rows + (window.top - vy - rows_origin + r) * rows_stride, window.width * C,
                  out.data_ptr<uint8_t>() + r * window.width * C);
  }
  return out;
}

// Pillow's bicubic resize of a 32-bit integer ("I") image, e.g. a 16-bit grey PNG: the same taps with double
// weights, each pass rounded half away from zero to int32 (Resample.c's 32bpc path). Same arguments as resize_core;
// img is [H,W,1] int32.
inline at::Tensor resize_core_i32(const at::Tensor& img, int64_t vy, int64_t vx, int64_t in_h, int64_t in_w,
                                  int64_t out_h, int64_t out_w, Box window) {
  const int64_t H = img.size(0), W = img.size(1);
  const int32_t* data = img.data_ptr<int32_t>();
  const auto round_up = [](double v) { return static_cast<int32_t>(v >= 0.0 ? v + 0.5 : v - 0.5); };
  // Rows of img the vertical pass reads (all of the window's when there is none) and their horizontal pass.
  int64_t row_first = window.top - vy, row_last = window.top + window.height - vy;
  ResampleCoeffsDouble vertical;
  if (out_h != in_h) {
    vertical = bicubic_coeffs_double(in_h, out_h, window.top, window.height);
    row_first = H, row_last = 0;
    for (size_t i = 0; i < vertical.first.size(); ++i) {
      row_first = std::min<int64_t>(row_first, vertical.first[i] - vy);
      row_last = std::max<int64_t>(row_last, vertical.first[i] + vertical.count[i] - vy);
    }
  }
  const ResampleCoeffsDouble horizontal =
      out_w != in_w ? bicubic_coeffs_double(in_w, out_w, window.left, window.width) : ResampleCoeffsDouble{};
  for (size_t i = 0; i < horizontal.first.size(); ++i)
    TAXON_CHECK(horizontal.first[i] - vx >= 0 && horizontal.first[i] + horizontal.count[i] - vx <= W, "data.bad-box",
                "resize reads columns outside the ", H, "x", W, " buffer");
  TAXON_CHECK(row_first >= 0 && row_last <= H && (out_w != in_w || (window.left - vx >= 0 && window.left + window.width - vx <= W)),
              "data.bad-box", "resize reads rows [", row_first, ", ", row_last, ") outside the ", H, "x", W, " buffer");
  const int64_t n_rows = row_last - row_first;
  std::vector<int32_t> rows(static_cast<size_t>(n_rows * window.width));
  for (int64_t r = 0; r < n_rows; ++r) {
    const int32_t* in = data + (row_first + r) * W;
    int32_t* out = rows.data() + r * window.width;
    for (int64_t x = 0; x < window.width; ++x) {
      if (out_w == in_w) {
        out[x] = in[window.left + x - vx];
        continue;
      }
      const double* k = horizontal.weights.data() + x * horizontal.ksize;
      const int32_t* p = in + horizontal.first[static_cast<size_t>(x)] - vx;
      double sum = 0.0;
      for (int t = 0; t < horizontal.count[static_cast<size_t>(x)]; ++t) sum += p[t] * k[t];
      out[x] = round_up(sum);
    }
  }
  at::Tensor result = at::empty({window.height, window.width, 1}, at::kInt);
  int32_t* o = result.data_ptr<int32_t>();
  for (int64_t y = 0; y < window.height; ++y)
    for (int64_t x = 0; x < window.width; ++x) {
      if (out_h == in_h) {
        o[y * window.width + x] = rows[static_cast<size_t>((window.top + y - vy - row_first) * window.width + x)];
        continue;
      }
      const double* k = vertical.weights.data() + y * vertical.ksize;
      const int64_t first = vertical.first[static_cast<size_t>(y)] - vy - row_first;
      double sum = 0.0;
      for (int t = 0; t < vertical.count[static_cast<size_t>(y)]; ++t)
        sum += rows[static_cast<size_t>((first + t) * window.width + x)] * k[t];
      o[y * window.width + x] = round_up(sum);
    }
  return result;
}

// Source positions of Pillow's nearest-neighbour resize (ImagingScaleAffine): the position starts at half a step and
// adds in/out per output in double, truncated; -1 where it falls outside (Pillow leaves those outputs 0).
inline std::vector<int64_t> nearest_positions(int64_t in_size, int64_t out_size) {
  std::vector<int64_t> at(static_cast<size_t>(out_size));
  const double step = static_cast<double>(in_size) / static_cast<double>(out_size);
  double pos = step * 0.5;
  for (int64_t i = 0; i < out_size; ++i, pos += step) {
    const int64_t v = pos < 0.0 ? -1 : static_cast<int64_t>(pos);
    at[static_cast<size_t>(i)] = v < in_size ? v : -1;
  }
  return at;
}

// Pillow's Image.resize(NEAREST) of a [H,W,C] uint8 image (modes "1" and "P" whatever the filter); arguments as
// resize_core.
inline at::Tensor resize_core_nearest(const at::Tensor& img, int64_t vy, int64_t vx, int64_t in_h, int64_t in_w,
                                      int64_t out_h, int64_t out_w, Box window) {
  const int64_t H = img.size(0), W = img.size(1), C = img.size(2);
  const std::vector<int64_t> ys = nearest_positions(in_h, out_h), xs = nearest_positions(in_w, out_w);
  at::Tensor out = at::zeros({window.height, window.width, C}, at::kByte);
  const uint8_t* in = img.data_ptr<uint8_t>();
  uint8_t* o = out.data_ptr<uint8_t>();
  for (int64_t y = 0; y < window.height; ++y) {
    const int64_t sy = ys[static_cast<size_t>(window.top + y)];
    if (sy < 0) continue;
    TAXON_CHECK(sy - vy >= 0 && sy - vy < H, "data.bad-box", "resize reads row ", sy - vy, " of a ", H, "-row buffer");
    for (int64_t x = 0; x < window.width; ++x) {
      const int64_t sx = xs[static_cast<size_t>(window.left + x)];
      if (sx < 0) continue;
      TAXON_CHECK(sx - vx >= 0 && sx - vx < W, "data.bad-box", "resize reads column ", sx - vx, " of a ", W,
                  "-column buffer");
      std::copy_n(in + ((sy - vy) * W + (sx - vx)) * C, C, o + (y * window.width + x) * C);
    }
  }
  return out;
}

}  // namespace detail

// Resizes `source` (a box of a [H,W,C] uint8 image; default the whole image) to out_h x out_w exactly as PIL's
// Image.resize(..., BICUBIC) does and returns the output pixels inside `window` (default all) as [h,w,C] uint8.
inline at::Tensor resize_bicubic(const at::Tensor& image, int64_t out_h, int64_t out_w, Box source = {}, Box window = {}) {
  detail::check_hwc_u8(image, "resize_bicubic");
  const at::Tensor img = image.contiguous();
  const int64_t H = img.size(0), W = img.size(1);
  if (source.height == 0 && source.width == 0) source = {0, 0, H, W};
  if (window.height == 0 && window.width == 0) window = {0, 0, out_h, out_w};
  TAXON_CHECK(source.top >= 0 && source.left >= 0 && source.height > 0 && source.width > 0 &&
                  source.top + source.height <= H && source.left + source.width <= W,
              "data.bad-box", "resize source box (top ", source.top, ", left ", source.left, ", ", source.height, "x",
              source.width, ") outside the ", H, "x", W, " image");
  TAXON_CHECK(out_h > 0 && out_w > 0 && window.top >= 0 && window.left >= 0 && window.height > 0 && window.width > 0 &&
                  window.top + window.height <= out_h && window.left + window.width <= out_w,
              "data.bad-box", "resize window (top ", window.top, ", left ", window.left, ", ", window.height, "x",
              window.width, ") outside the ", out_h, "x", out_w, " output");
  if (out_h == H && out_w == W && source.height == H && source.width == W && window.height == H && window.width == W)
    return img;  // nothing to resample or crop (e.g. clip_eval on an image the dataset already decoded to 224x224)
  return detail::resize_core(img, -source.top, -source.left, source.height, source.width, out_h, out_w, window);
}

// torchvision's Resize(int) output size: shorter side -> size, longer side truncated proportionally.
inline std::pair<int64_t, int64_t> shortest_side_size(int64_t h, int64_t w, int64_t size) {
  if (w <= h) return {static_cast<int64_t>(static_cast<double>(size * h) / static_cast<double>(w)), size};
  return {size, static_cast<int64_t>(static_cast<double>(size * w) / static_cast<double>(h))};
}

// torchvision's CenterCrop offsets: int(round((in - out) / 2.0)) with Python's round-half-to-even.
inline int64_t center_offset(int64_t in, int64_t out) {
  return static_cast<int64_t>(std::nearbyint(static_cast<double>(in - out) / 2.0));
}

}  // namespace taxon::data
