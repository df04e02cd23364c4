// Precompiled for the test target: the heavy headers nearly every test file includes.
#pragma once
// LibTorch first: it pulls in glog, whose CHECK must then be replaced by Catch's (not the other way round,
// or a failing CHECK aborts the whole binary instead of being reported).
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/autograd.h>

#undef CHECK
#include <catch2/catch.hpp>

#include "support/tensor_compare.hpp"
#include "support/temp_dir.hpp"
#include "support/types.hpp"
#include "taxon/core/error.hpp"
