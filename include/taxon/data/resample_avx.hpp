#pragma once
// AVX2 / AVX-512 variants of the PIL-exact resampling passes and of ToTensor+Normalize, selected at run time
// (taxon/core/cpu.hpp). Same integer arithmetic as the SSE2 and scalar kernels in resample.hpp, so every
// variant is bit-identical to Pillow. The horizontal pass is the cost centre of CLIP preprocessing; here one
// register carries 2 (AVX2) or 4 (AVX-512) image rows, which share the output position's weights.
// Included by resample.hpp after its detail kernels; not a public header.
#include "taxon/core/cpu.hpp"

#if defined(TAXON_SIMD_X86_DISPATCH)
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>

// GCC 12 reports its own AVX-512 intrinsics (undefined pass-through operands) as uninitialised (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#ifndef __clang__  // a GCC-only warning; Clang (sanitizer builds) would warn about the unknown group instead
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace taxon::data::detail {

// pshufb masks turning 16 loaded bytes (taps t..t+3 of RGB pixels, 12 bytes used) into two pmaddwd operands
// with the SSE2 kernel's lanes (R_t, R_t+1, G_t, G_t+1, B_t, B_t+1, 0, 0) as int16.
#define TAXON_RGB_PAIR_MASK(t0, t1)                                                                        \
  (t0), -128, (t1), -128, (t0) + 1, -128, (t1) + 1, -128, (t0) + 2, -128, (t1) + 2, -128, -128, -128, -128, -128

// Bytes of the 16-byte loads past the last tap an output position reads: the loads start at taps 0, 4, 8, ...
inline int64_t rgb_quad_read_end(const ResampleCoeffs& c, int64_t i) {
  const int pairs = (c.count[static_cast<size_t>(i)] + 1) / 2;
  return static_cast<int64_t>(c.first[static_cast<size_t>(i)]) * 3 + 6 * (2 * ((pairs - 1) / 2)) + 16;
}

// Writes one RGB pixel from the low 3 bytes of `rgbx`. Within a row a 4-byte store is fine (the next pixel
// overwrites the spare byte); the row's last pixel must not touch the byte after it.
inline void store_rgb(uint8_t* out, int32_t rgbx, bool more_follow) {
  if (more_follow) std::memcpy(out, &rgbx, 4);
  else std::memcpy(out, &rgbx, 3);
}

// Packs four outputs' int32 (R, G, B, 0) per 128-bit lane into 12 RGB bytes (+4 zero bytes) per lane.
#define TAXON_RGB_COMPACT 0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -128, -128, -128, -128

#define TAXON_WEIGHTS256(at) _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(at)))

// Two rows per 256-bit register, one per 128-bit lane; returns one output position's clipped int32 values.
__attribute__((target("avx2"), always_inline)) inline __m256i rgb_h_output_avx2(const uint8_t* src, int64_t stride,
                                                                              const ResampleCoeffs& c,
                                                                              const PairWeights& w, int64_t i) {
  const __m256i mask_a = _mm256_setr_epi8(TAXON_RGB_PAIR_MASK(0, 3), TAXON_RGB_PAIR_MASK(0, 3));
  const __m256i mask_b = _mm256_setr_epi8(TAXON_RGB_PAIR_MASK(6, 9), TAXON_RGB_PAIR_MASK(6, 9));
  const uint8_t* p = src + static_cast<int64_t>(c.first[static_cast<size_t>(i)]) * 3;
  const int pairs = (c.count[static_cast<size_t>(i)] + 1) / 2;
  const int16_t* wh = w.hi.data() + i * w.pairs * 8;
  const int16_t* wl = w.lo.data() + i * w.pairs * 8;
  __m256i hi = _mm256_setzero_si256(), lo = _mm256_setzero_si256();
  for (int q = 0; q < pairs; q += 2) {
    const __m256i px = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 6 * q))),
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + stride + 6 * q)), 1);
    const __m256i a = _mm256_shuffle_epi8(px, mask_a);
    hi = _mm256_add_epi32(hi, _mm256_madd_epi16(a, TAXON_WEIGHTS256(wh + 8 * q)));
    lo = _mm256_add_epi32(lo, _mm256_madd_epi16(a, TAXON_WEIGHTS256(wl + 8 * q)));
    if (q + 1 < pairs) {
      const __m256i b = _mm256_shuffle_epi8(px, mask_b);
      hi = _mm256_add_epi32(hi, _mm256_madd_epi16(b, TAXON_WEIGHTS256(wh + 8 * q + 8)));
      lo = _mm256_add_epi32(lo, _mm256_madd_epi16(b, TAXON_WEIGHTS256(wl + 8 * q + 8)));
    }
  }
  const __m256i bias = _mm256_set1_epi32(1 << (kPrecisionBits - 1));
  return _mm256_srai_epi32(_mm256_add_epi32(_mm256_add_epi32(_mm256_slli_epi32(hi, kSplitBits), lo), bias), kPrecisionBits);
}

// Four outputs at a time are packed together and written with one 16-byte store per row (12 bytes used; the
// other 4 belong to the next outputs, written later), while at least 6 outputs remain so no store leaves the row.
__attribute__((target("avx2"))) inline void resample_rows_horizontal_rgb_avx2(const uint8_t* src, int64_t stride,
                                                                             const ResampleCoeffs& c,
                                                                             const PairWeights& w, int64_t outputs,
                                                                             uint8_t* dst0, uint8_t* dst1) {
  const __m256i compact = _mm256_setr_epi8(TAXON_RGB_COMPACT, TAXON_RGB_COMPACT);
  const __m256i zero = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 6 <= outputs; i += 4) {
    const __m256i s01 = _mm256_packs_epi32(rgb_h_output_avx2(src, stride, c, w, i), rgb_h_output_avx2(src, stride, c, w, i + 1));
    const __m256i s23 = _mm256_packs_epi32(rgb_h_output_avx2(src, stride, c, w, i + 2), rgb_h_output_avx2(src, stride, c, w, i + 3));
    const __m256i px = _mm256_shuffle_epi8(_mm256_packus_epi16(s01, s23), compact);  // saturation = Pillow's clip8
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst0 + i * 3), _mm256_castsi256_si128(px));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst1 + i * 3), _mm256_extracti128_si256(px, 1));
  }
  for (; i < outputs; ++i) {
    const __m256i s = _mm256_packus_epi16(_mm256_packs_epi32(rgb_h_output_avx2(src, stride, c, w, i), zero), zero);
    store_rgb(dst0 + i * 3, _mm256_cvtsi256_si32(s), i + 1 < outputs);
    store_rgb(dst1 + i * 3, _mm_cvtsi128_si32(_mm256_extracti128_si256(s, 1)), i + 1 < outputs);
  }
}

// Four rows per 512-bit register.
#define TAXON_RGB_H_AVX512(NAME, TARGET, ACC) \
__attribute__((target(TARGET))) inline void NAME( \
    const uint8_t* src, int64_t stride, const ResampleCoeffs& c, const PairWeights& w, int64_t outputs, \
    uint8_t* const dst[4]) { \
  const __m512i mask_a = _mm512_broadcast_i32x4(_mm_setr_epi8(TAXON_RGB_PAIR_MASK(0, 3))); \
  const __m512i mask_b = _mm512_broadcast_i32x4(_mm_setr_epi8(TAXON_RGB_PAIR_MASK(6, 9))); \
  const __m512i bias = _mm512_set1_epi32(1 << (kPrecisionBits - 1)); \
  const __m512i zero = _mm512_setzero_si512(); \
  for (int64_t i = 0; i < outputs; ++i) { \
    const uint8_t* p = src + static_cast<int64_t>(c.first[static_cast<size_t>(i)]) * 3; \
    const int pairs = (c.count[static_cast<size_t>(i)] + 1) / 2; \
    const int16_t* wh = w.hi.data() + i * w.pairs * 8; \
    const int16_t* wl = w.lo.data() + i * w.pairs * 8; \
    __m512i hi = zero, lo = zero; \
    for (int q = 0; q < pairs; q += 2) { \
      const uint8_t* at = p + 6 * q; \
      __m512i px = _mm512_zextsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(at))); \
      px = _mm512_inserti32x4(px, _mm_loadu_si128(reinterpret_cast<const __m128i*>(at + stride)), 1); \
      px = _mm512_inserti32x4(px, _mm_loadu_si128(reinterpret_cast<const __m128i*>(at + 2 * stride)), 2); \
      px = _mm512_inserti32x4(px, _mm_loadu_si128(reinterpret_cast<const __m128i*>(at + 3 * stride)), 3); \
      const __m512i a = _mm512_shuffle_epi8(px, mask_a); \
      hi = ACC(hi, a, _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wh + 8 * q)))); \
      lo = ACC(lo, a, _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wl + 8 * q)))); \
      if (q + 1 < pairs) { \
        const __m512i b = _mm512_shuffle_epi8(px, mask_b); \
        hi = ACC(hi, b, _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wh + 8 * q + 8)))); \
        lo = ACC(lo, b, _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wl + 8 * q + 8)))); \
      } \
    } \
    __m512i s = _mm512_srai_epi32(_mm512_add_epi32(_mm512_add_epi32(_mm512_slli_epi32(hi, kSplitBits), lo), bias), kPrecisionBits); \
    s = _mm512_packus_epi16(_mm512_packs_epi32(s, s), zero); \
    const bool more = i + 1 < outputs; \
    store_rgb(dst[0] + i * 3, _mm_cvtsi128_si32(_mm512_castsi512_si128(s)), more); \
    store_rgb(dst[1] + i * 3, _mm_cvtsi128_si32(_mm512_extracti32x4_epi32(s, 1)), more); \
    store_rgb(dst[2] + i * 3, _mm_cvtsi128_si32(_mm512_extracti32x4_epi32(s, 2)), more); \
    store_rgb(dst[3] + i * 3, _mm_cvtsi128_si32(_mm512_extracti32x4_epi32(s, 3)), more); \
  } \
}

#define TAXON_MADD_ADD(acc, x, w) _mm512_add_epi32(acc, _mm512_madd_epi16(x, w))
TAXON_RGB_H_AVX512(resample_rows_horizontal_rgb_avx512, "avx512f,avx512bw,avx512dq,avx512vl,avx2", TAXON_MADD_ADD)
#undef TAXON_MADD_ADD
#undef TAXON_RGB_H_AVX512

// Four output positions per register (see QuadGather) for four rows at a time, which share the tables: one
// 64-byte load per row serves the group, vpermb builds each tap pair's operand for all four positions, vpdpwssd
// multiplies and accumulates. Needs VBMI and VNNI (Ice Lake, Zen 4 and later).
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,avx512vnni,avx512vbmi"))) inline void
resample_rows_horizontal_rgb_vbmi(const uint8_t* src, int64_t stride, int64_t rows, const uint8_t* readable_end,
                                  const QuadGather& g, uint8_t* dst, int64_t dst_stride) {
  constexpr int kRows = 4;
  const __mmask64 low_bytes = 0x0555055505550555ULL;  // per lane: low bytes of int16 slots 0..5 (R, G, B pairs)
  const __m512i bias = _mm512_set1_epi32(1 << (kPrecisionBits - 1));
  const __m512i zero = _mm512_setzero_si512(), top = _mm512_set1_epi32(255);
  // Byte 0 of the R, G, B int32 of each lane's output, packed into 12 bytes.
  const __m512i gather_out = _mm512_set_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                             0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                             0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                             0, 0, 0, 0, 56, 52, 48, 40, 36, 32, 24, 20, 16, 8, 4, 0);
  for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
    const int n = static_cast<int>(std::min<int64_t>(kRows, rows - r0));
    for (int64_t q = 0; q < g.groups; ++q) {
      __m512i data[kRows], hi[kRows], lo[kRows];
      for (int r = 0; r < kRows; ++r) {
        const uint8_t* p = src + (r0 + std::min(r, n - 1)) * stride + static_cast<int64_t>(g.base[static_cast<size_t>(q)]) * 3;
        const int64_t avail = readable_end - p;  // masked loads never touch memory past the image
        data[r] = avail >= 64 ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi8(avail <= 0 ? 0 : (~0ULL >> (64 - avail)), p);
        hi[r] = lo[r] = zero;
      }
      const uint8_t* index = g.index.data() + q * g.pairs * 64;
      const int16_t* wh = g.hi.data() + q * g.pairs * 32;
      const int16_t* wl = g.lo.data() + q * g.pairs * 32;
      for (int k = 0; k < g.pairs; ++k) {
        const __m512i idx = _mm512_loadu_si512(index + 64 * k);
        const __m512i whk = _mm512_loadu_si512(wh + 32 * k), wlk = _mm512_loadu_si512(wl + 32 * k);
        for (int r = 0; r < kRows; ++r) {
          const __m512i v = _mm512_maskz_permutexvar_epi8(low_bytes, idx, data[r]);
          hi[r] = _mm512_dpwssd_epi32(hi[r], v, whk);
          lo[r] = _mm512_dpwssd_epi32(lo[r], v, wlk);
        }
      }
      for (int r = 0; r < n; ++r) {
        __m512i s = _mm512_srai_epi32(_mm512_add_epi32(_mm512_add_epi32(_mm512_slli_epi32(hi[r], kSplitBits), lo[r]), bias),
                                      kPrecisionBits);
        s = _mm512_min_epi32(_mm512_max_epi32(s, zero), top);  // Pillow's clip8
        _mm512_mask_storeu_epi8(dst + (r0 + r) * dst_stride + 12 * q, 0xFFF, _mm512_permutexvar_epi8(gather_out, s));
      }
    }
  }
}

#undef TAXON_RGB_PAIR_MASK

// Vertical pass, one register width of a row per step: the SSE2 kernel's scheme on 256/512-bit registers (byte
// order survives because unpack and pack both work within 128-bit lanes). Stamped for AVX2 (P = _mm256, 32 bytes)
// and AVX-512 (P = _mm512, 64 bytes); returns the first column left for a narrower kernel.
#define TAXON_VERTICAL_KERNEL(NAME, TARGET, V, P, S, BYTES)                                                          \
  __attribute__((target(TARGET))) inline int64_t NAME(const uint8_t* src, int64_t src_stride, int64_t row0,          \
                                                      int64_t row_len, int64_t j_begin, const ResampleCoeffs& c,     \
                                                      int64_t outputs, uint8_t* dst) {                               \
    const V zero = P##_setzero_##S();                                                                                \
    const V bias = P##_set1_epi32(1 << (kPrecisionBits - 1));                                                        \
    const int64_t vec_end = j_begin + (row_len - j_begin) / BYTES * BYTES;                                           \
    for (int64_t i = 0; i < outputs; ++i) {                                                                          \
      const int32_t* k = c.weights.data() + i * c.ksize;                                                             \
      const int64_t first = c.first[static_cast<size_t>(i)] - row0;                                                  \
      const int n = c.count[static_cast<size_t>(i)];                                                                 \
      uint8_t* out = dst + i * row_len;                                                                              \
      for (int64_t j = j_begin; j < vec_end; j += BYTES) {                                                           \
        V hi[4] = {zero, zero, zero, zero}, lo[4] = {zero, zero, zero, zero};                                        \
        for (int t = 0; t < n; t += 2) {                                                                             \
          const int32_t k0 = k[t], k1 = t + 1 < n ? k[t + 1] : 0;                                                    \
          const uint8_t* ra = src + (first + t) * src_stride + j;                                                    \
          const uint8_t* rb = t + 1 < n ? ra + src_stride : ra;                                                      \
          const V a = P##_loadu_##S(reinterpret_cast<const V*>(ra));                                                 \
          const V b = P##_loadu_##S(reinterpret_cast<const V*>(rb));                                                 \
          const V wh = P##_set1_epi32(weight_pair_hi(k0, k1)), wl = P##_set1_epi32(weight_pair_lo(k0, k1));          \
          const V ab_lo = P##_unpacklo_epi8(a, b), ab_hi = P##_unpackhi_epi8(a, b);                                  \
          const V v[4] = {P##_unpacklo_epi8(ab_lo, zero), P##_unpackhi_epi8(ab_lo, zero),                            \
                          P##_unpacklo_epi8(ab_hi, zero), P##_unpackhi_epi8(ab_hi, zero)};                           \
          for (int q = 0; q < 4; ++q) {                                                                              \
            hi[q] = P##_add_epi32(hi[q], P##_madd_epi16(v[q], wh));                                                  \
            lo[q] = P##_add_epi32(lo[q], P##_madd_epi16(v[q], wl));                                                  \
          }                                                                                                          \
        }                                                                                                            \
        V r[4];                                                                                                      \
        for (int q = 0; q < 4; ++q)                                                                                  \
          r[q] = P##_srai_epi32(P##_add_epi32(P##_add_epi32(P##_slli_epi32(hi[q], kSplitBits), lo[q]), bias),       \
                                kPrecisionBits);                                                                     \
        P##_storeu_##S(reinterpret_cast<V*>(out + j),                                                                \
                       P##_packus_epi16(P##_packs_epi32(r[0], r[1]), P##_packs_epi32(r[2], r[3])));                  \
      }                                                                                                              \
    }                                                                                                                \
    return vec_end;                                                                                                  \
  }

TAXON_VERTICAL_KERNEL(resample_vertical_avx2, "avx2", __m256i, _mm256, si256, 32)
TAXON_VERTICAL_KERNEL(resample_vertical_avx512, "avx512f,avx512bw,avx512dq,avx512vl,avx2", __m512i, _mm512, si512, 64)
#undef TAXON_VERTICAL_KERNEL

// uint8 RGB pixels -> three float planes, v * scale[c] - shift[c] (multiply then subtract, as the scalar loop, so
// results are identical). Eight pixels (24 bytes) per step.
__attribute__((target("avx2"))) inline int64_t normalize_rgb_avx2(const uint8_t* src, int64_t pixels, float* const dst[3],
                                                                 const float scale[3], const float shift[3]) {
  // Channel c of pixels 0..7 sits at bytes 3k + c: bytes 0..15 come from the first load, 16..23 from the second.
  alignas(16) static constexpr int8_t kFromLo[3][16] = {
      {0, 3, 6, 9, 12, 15, -128, -128, -128, -128, -128, -128, -128, -128, -128, -128},
      {1, 4, 7, 10, 13, -128, -128, -128, -128, -128, -128, -128, -128, -128, -128, -128},
      {2, 5, 8, 11, 14, -128, -128, -128, -128, -128, -128, -128, -128, -128, -128, -128}};
  alignas(16) static constexpr int8_t kFromHi[3][16] = {
      {-128, -128, -128, -128, -128, -128, 2, 5, -128, -128, -128, -128, -128, -128, -128, -128},
      {-128, -128, -128, -128, -128, 0, 3, 6, -128, -128, -128, -128, -128, -128, -128, -128},
      {-128, -128, -128, -128, -128, 1, 4, 7, -128, -128, -128, -128, -128, -128, -128, -128}};
  int64_t p = 0;
  for (; p + 8 <= pixels; p += 8) {
    const uint8_t* at = src + 3 * p;
    const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(at));
    const __m128i hi = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(at + 16));
    for (int ch = 0; ch < 3; ++ch) {
      const __m128i bytes = _mm_or_si128(_mm_shuffle_epi8(lo, _mm_load_si128(reinterpret_cast<const __m128i*>(kFromLo[ch]))),
                                         _mm_shuffle_epi8(hi, _mm_load_si128(reinterpret_cast<const __m128i*>(kFromHi[ch]))));
      const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
      const __m256 r = _mm256_sub_ps(_mm256_mul_ps(v, _mm256_set1_ps(scale[ch])), _mm256_set1_ps(shift[ch]));
      _mm256_storeu_ps(dst[ch] + p, r);  // plain stores: measured faster here than non-temporal ones into the batch
    }
  }
  return p;  // pixels done; the caller finishes the tail
}

// uint8 RGB pixels -> three uint8 planes (ToTensor's layout without the scaling). Sixteen pixels (48 bytes) per
// step: each plane's 16 bytes are gathered from the three loads by one pshufb each.
__attribute__((target("avx2"))) inline int64_t deinterleave_rgb_avx2(const uint8_t* src, int64_t pixels,
                                                                     uint8_t* const dst[3]) {
  // kGather[ch][part][j]: byte 3j + ch of the 48 when it lies in load `part`, else -128 (pshufb writes zero).
  static constexpr auto kGather = [] {
    std::array<std::array<std::array<int8_t, 16>, 3>, 3> m{};
    for (int ch = 0; ch < 3; ++ch)
      for (int part = 0; part < 3; ++part)
        for (int j = 0; j < 16; ++j) {
          const int byte = 3 * j + ch;
          m[ch][part][j] = static_cast<int8_t>(byte / 16 == part ? byte % 16 : -128);
        }
    return m;
  }();
  int64_t p = 0;
  for (; p + 16 <= pixels; p += 16) {
    const uint8_t* at = src + 3 * p;
    const __m128i part[3] = {_mm_loadu_si128(reinterpret_cast<const __m128i*>(at)),
                             _mm_loadu_si128(reinterpret_cast<const __m128i*>(at + 16)),
                             _mm_loadu_si128(reinterpret_cast<const __m128i*>(at + 32))};
    for (int ch = 0; ch < 3; ++ch) {
      __m128i plane = _mm_setzero_si128();
      for (int k = 0; k < 3; ++k)
        plane = _mm_or_si128(plane, _mm_shuffle_epi8(part[k], _mm_loadu_si128(reinterpret_cast<const __m128i*>(kGather[ch][k].data()))));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst[ch] + p), plane);
    }
  }
  return p;  // pixels done; the caller finishes the tail
}

}  // namespace taxon::data::detail

#pragma GCC diagnostic pop

#endif  // TAXON_SIMD_X86_DISPATCH
