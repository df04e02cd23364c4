#pragma once
// The data pipeline: taxonomy labels, datasets, decoding, transforms, the loader and split helpers.
#include "taxon/data/csv.hpp"
#include "taxon/data/dataset.hpp"
#include "taxon/data/decode.hpp"
#include "taxon/data/decode_crop.hpp"
#include "taxon/data/embedding_dataset.hpp"
#include "taxon/data/idx_dataset.hpp"
#include "taxon/data/image_dataset.hpp"
#include "taxon/data/loader.hpp"
#include "taxon/data/rank_spec.hpp"
#include "taxon/data/split.hpp"
#include "taxon/data/taxonomy.hpp"
#include "taxon/data/transforms.hpp"
