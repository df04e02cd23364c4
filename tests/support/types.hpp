#pragma once
// Shared type lists for TEMPLATE_LIST_TEST_CASE, so every area tests the same dtypes.
#include <tuple>

namespace taxon::test {
using FloatTypes = std::tuple<float, double>;
}  // namespace taxon::test
