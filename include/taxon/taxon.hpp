#pragma once
// Umbrella header: everything taxon offers. Prefer the per-concept headers in library code to keep
// compile times down; this one is for applications and examples. Not included, because the TorchScript/pickle
// headers they need cost seconds per translation unit: taxon/backbone/torchscript.hpp (PyTorch .pt loading) and
// taxon/text/clip_pt.hpp (CLIP models from .pt files).
#include "taxon/core/core.hpp"
#include "taxon/io/atomic_file.hpp"
#include "taxon/io/npy.hpp"
#include "taxon/io/safetensors.hpp"
#include "taxon/data/data.hpp"
#include "taxon/data/any_dataset.hpp"
#include "taxon/data/relabel.hpp"
#include "taxon/backbone/concepts.hpp"
#include "taxon/backbone/vit.hpp"
#include "taxon/backbone/zoo.hpp"
#include "taxon/backbone/weights.hpp"
#include "taxon/backbone/embed.hpp"
#include "taxon/text/text.hpp"
#include "taxon/loss/loss.hpp"
#include "taxon/pfc/pfc.hpp"
#include "taxon/cluster/cluster.hpp"
#include "taxon/eval/eval.hpp"
#include "taxon/train/train.hpp"
#include "taxon/report/report.hpp"
