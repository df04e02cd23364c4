#pragma once
#include <cstdint>

namespace taxon::data {

// Integer box in pixel coordinates: rows [top, top+height), columns [left, left+width).
struct Box {
  std::int64_t top = 0, left = 0, height = 0, width = 0;
};

}  // namespace taxon::data
