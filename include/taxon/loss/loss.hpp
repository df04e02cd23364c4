#pragma once
// Margin policies and margin-softmax cross-entropy (reference composition and fused chunked kernel).
#include "taxon/loss/fused.hpp"
#include "taxon/loss/margin.hpp"
#include "taxon/loss/margin_math.hpp"
#include "taxon/loss/reference.hpp"
#include "taxon/loss/validate.hpp"
