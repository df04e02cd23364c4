#pragma once
// PartialFC head, class samplers and the Head concept.
#include "taxon/pfc/concepts.hpp"
#include "taxon/pfc/partial_fc.hpp"
#include "taxon/pfc/sampler.hpp"
