#pragma once
// Umbrella header: everything taxon offers. Prefer the per-concept headers in library code to keep
// compile times down; this one is for applications and examples.
#include "taxon/core/core.hpp"
#include "taxon/io/atomic_file.hpp"
