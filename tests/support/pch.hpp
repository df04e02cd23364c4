// Precompiled for the test target: the heavy headers nearly every test file includes.
#pragma once
#include <catch2/catch.hpp>

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/autograd.h>

#include "support/tensor_compare.hpp"
#include "support/types.hpp"
#include "taxon/core/error.hpp"
