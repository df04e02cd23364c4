#pragma once
// Training: Trainer<Backbone, Head>, AdamW groups, schedules (OneCycle, cosine-warmup, constant), mixed precision,
// compile-time callbacks and atomic checkpoints.
#include "taxon/train/amp.hpp"
#include "taxon/train/callbacks.hpp"
#include "taxon/train/checkpoint.hpp"
#include "taxon/train/schedule.hpp"
#include "taxon/train/trainer.hpp"
