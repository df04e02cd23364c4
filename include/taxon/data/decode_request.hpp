#pragma once
// The explicit channel from a Loader to a dataset that can do the first step of the transform while decoding.
// When the transform starts with a resize + center crop (clip_eval, timm_eval) and the dataset has the optional
// member get(i, const DecodeRequest&) (concept AcceptsDecodeRequest, dataset.hpp), the Loader calls that instead
// of get(i) and applies only the rest of the transform. Image datasets answer it by decoding only the pixels the
// crop reads (decode_crop.hpp); datasets without the member are called with get(i) and the whole transform.
#include "taxon/data/dataset.hpp"
#include "taxon/data/transforms.hpp"

#include <ATen/ATen.h>

#include <cstdint>

namespace taxon::data {

// What get(i, request) returns: what CLIP's preprocessing on PIL gives for the sample, i.e. `resize_crop` applied
// to the image in its own mode before get(i)'s conversion to RGB. For RGB and grey images (every in-memory dataset,
// most files) that is get(i) with `resize_crop` applied, bit for bit; image files in another PIL mode (alpha,
// palette, CMYK, 16-bit grey: image_mode.hpp) are resized in that mode first, as PIL does. How to get there is the
// dataset's choice (decode straight to the crop, or decode as usual and resize), so decoding that depends on the
// file (its colour mode, its format) stays in the dataset. Fields added later are requests of the same kind.
struct DecodeRequest {
  ResizeCenterCrop resize_crop;  // shorter side to resize_crop.resize_to, then the resize_crop.crop square in its centre

  // The reference result on an RGB (or grey-as-RGB) image, e.g. one decoded as get(i) decodes it.
  at::Tensor apply(const at::Tensor& image) const { return resize_crop.apply(image); }
};

// dataset.get(i, request) when the dataset has it, else get(i) with the request applied: the same Sample either way
// (wrappers such as AnyDataset use it to pass a request through to datasets that may not accept one).
template <Dataset D>
Sample get_requested(const D& dataset, std::int64_t i, const DecodeRequest& request) {
  if constexpr (AcceptsDecodeRequest<D>) {
    return dataset.get(i, request);
  } else {
    Sample s = dataset.get(i);
    s.image = request.apply(s.image);
    return s;
  }
}

}  // namespace taxon::data
