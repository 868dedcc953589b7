// The equal-block entry: the statistics of an array folded against itself, from one pass
// over the array (docs/numbers.md "Equal blocks"). Knows nothing of Python.
#pragma once

#include "kernels.hpp"

namespace tolerance {

// Exactly the Stats that compute(x, x, shape, req) gives, field by field, for any dtype,
// strides, byte order and offsets (and whatever thread count compute() ran with): every element is equal to itself, so
// |a-b|, the relative difference, the ULP distance and the margin are 0 wherever a pair is
// compared, nothing is outside any bound, and a NaN (against itself) counts nan_both and is
// not compared. Only the NaNs are counted from the data (floats only: an integer or bool
// array is not read at all), on the calling thread. The bound in `req` does not change
// the result; only step_offset and inner_offset are used.
Stats compute_equal(const ArrayView& x, const std::vector<std::int64_t>& shape, const Request& req);

}  // namespace tolerance
