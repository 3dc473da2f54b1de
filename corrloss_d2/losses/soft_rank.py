"""Differentiable soft ranks by Euclidean projection onto the permutahedron.

Blondel, Teboul, Berthet, Djolonga, "Fast Differentiable Sorting and Ranking", ICML 2020: the l2
soft rank of ``x`` with strength ``eps`` is the projection of ``x / eps`` onto the permutahedron of
``(1, ..., n)``. Sorting ``z = x / eps`` in non-increasing order reduces the projection to an
isotonic regression of ``z_sorted - (n, ..., 1)``, solved exactly by pool-adjacent-violators (PAV).

Two exact implementations of it; by default the one for the tensor's device (``backend``):

* "numba", for CPU tensors (and for others but CUDA ones, through the host): the forward pass is
  one compiled CPU kernel, linear in n and free of numpy's sort (whose speed depends on the CPU's
  vector units): scale and check the values, sort them stably (an LSD radix sort of their bit
  patterns, then a counting pass by group), run PAV per group. When all values span less than 1
  the sort is skipped: PAV would pool each group into one block. The kernel records the order and
  the PAV blocks, and the backward pass applies the projection's exact Jacobian (identity minus
  averaging within blocks) with a second kernel.
* "torch", for CUDA tensors: torch operations on the tensor's device, no copy to the host and a
  few host syncs per call, none per value. PAV itself is sequential; the same blocks are found by
  a sort, a few parallel rounds of PAV (pooling every run of rising means at once), then a test of
  the cuts left as vertices of the least concave majorant of the cumulative sums (whose slopes
  are the blocks' means), each against its neighbours within a reach that grows until the
  blocks' means fall. The backward pass averages within the blocks (differences of cumsums).
"""

import functools
import math

import numba
import numpy as np
import torch

__all__ = ["soft_rank", "grouped_soft_rank", "SOFT_RANK_BACKENDS"]

# This module's own projections; "native" is the one for the tensor's device (see _projection).
_OWN_BACKENDS = ("native", "numba", "torch")
SOFT_RANK_BACKENDS = _OWN_BACKENDS + ("torchsort",)
NON_FINITE_MESSAGE = (
    "soft_rank got non-finite values (inf or NaN, or overflow of x / strength); "
    "ranks are undefined for them"
)

# Sort keys are unsigned integers that ascend as the values descend: the 32-bit pattern of float32
# values, the 64-bit pattern of float64 ones, reflected. Before sorting, the bits shared by all keys
# are dropped: the key minus the smallest key, shifted right past the trailing bits common to all
# keys. The rest is radix-sorted, least significant digit first, in as few passes of at most
# _MAX_DIGIT_BITS bits as cover it (float32 values in [1e-4, 1] leave 27 bits: 3 passes of 9). The
# index of each value rides in the low bits of the same uint64 as its key whenever both fit.
_MAX_DIGIT_BITS = 11
_ONE = np.uint64(1)
_SIGN_SHIFT_32 = np.uint64(31)
_SIGN_SHIFT_64 = np.uint64(63)
_EXPONENT_32 = np.uint64(0x7F800000)
_LOW_31_BITS = np.uint64(0x7FFFFFFF)
_LOW_63_BITS = np.uint64(0x7FFFFFFFFFFFFFFF)
_ALL_BITS = np.uint64(0xFFFFFFFFFFFFFFFF)
_SMALLEST_NORMAL = np.finfo(np.float64).tiny
_NON_FINITE = -1
_BAD_GROUP = -2
_NEEDS_64_BIT_KEYS = -3
_KERNEL_DTYPES = (torch.float32, torch.float64)
_NO_GROUPS = np.empty(0, np.int64)
_NO_BITS = np.empty(0, np.uint32)
# The torch path compares candidate vertices with their neighbours in chunks of at most this many
# pairs (float64: 32 MiB per temporary), whatever the group sizes, within a first reach of about
# _FIRST_PAIRS pairs in all (see _torch_projection).
_PAIRS_PER_CHUNK = 1 << 22
_FIRST_PAIRS = 1 << 16


@numba.njit(cache=True, nogil=True, inline="always")
def _flip(bits, sign_shift, low_bits):
    """Maps the bit pattern of a float (not -0.0, not NaN), held in a uint64, to an integer that
    ascends as the floats descend: non-negative floats get their bits below the sign inverted
    (larger value, smaller key, all below the sign bit), negative ones stay as they are (more
    negative, larger key, all at or above the sign bit)."""
    return bits ^ (((bits >> sign_shift) - _ONE) & low_bits)


@numba.njit(cache=True, nogil=True)
def _bit_length(v):
    """Number of bits of the uint64 ``v`` (0 for 0)."""
    length = 0
    while v != 0:
        v >>= _ONE
        length += 1
    return length


@numba.njit(cache=True, nogil=True)
def _group_starts(n, group_index, row_length, num_groups):
    """(G + 1,) offsets of the groups once ordered by group; ``[-1, ...]`` on an id outside
    ``[0, num_groups)``."""
    starts = np.zeros(num_groups + 1, np.int64)
    if num_groups == 1:
        starts[1] = n
    elif row_length > 0:
        for g in range(num_groups + 1):
            starts[g] = g * row_length
    else:
        for i in range(n):
            g = group_index[i]
            if g < 0 or g >= num_groups:
                starts[0] = -1
                return starts
            starts[g + 1] += 1
        for g in range(num_groups):
            starts[g + 1] += starts[g]
    return starts


@numba.njit(cache=True, nogil=True)
def _keys_32(x_bits, strength, keys):
    """Sort keys of float32 values (``x_bits``: their bit patterns) into ``keys``. For float32 the
    order of ``x`` is the order of ``z = float64(x) / strength``, ties included, unless ``z``
    overflows or underflows: a float32 and the next one differ by a factor of at least 1 + 2**-24,
    far above float64 rounding. Division is monotone, so the largest and the smallest nonzero
    ``|x|`` tell whether any ``z`` does.

    Returns:
        (status, smallest key, largest key, OR of every key XOR the first one); status 0,
        ``_NON_FINITE`` or ``_NEEDS_64_BIT_KEYS`` (some nonzero ``x`` gives a subnormal or zero z).
    """
    n = x_bits.shape[0]
    low = _ALL_BITS
    high = np.uint64(0)
    first = _flip(
        np.uint64(x_bits[0]) if x_bits[0] & _LOW_31_BITS else np.uint64(0),
        _SIGN_SHIFT_32,
        _LOW_31_BITS,
    )
    varying = np.uint64(0)
    largest_magnitude = np.uint64(0)
    smallest_magnitude_less_one = _ALL_BITS  # zero wraps around to the top
    for i in range(n):
        bits = np.uint64(x_bits[i])
        magnitude = bits & _LOW_31_BITS
        if magnitude == 0:  # -0.0 sorts as +0.0
            bits = np.uint64(0)
        key = _flip(bits, _SIGN_SHIFT_32, _LOW_31_BITS)
        keys[i] = key
        low = min(low, key)
        high = max(high, key)
        varying |= key ^ first
        largest_magnitude = max(largest_magnitude, magnitude)
        smallest_magnitude_less_one = min(smallest_magnitude_less_one, magnitude - _ONE)
    if largest_magnitude >= _EXPONENT_32:  # inf or NaN
        return _NON_FINITE, low, high, varying
    extremes = np.empty(2, np.uint32)
    extremes[0] = largest_magnitude
    extremes[1] = smallest_magnitude_less_one + _ONE
    magnitudes = extremes.view(np.float32)
    if not np.isfinite(np.float64(magnitudes[0]) / strength):
        return _NON_FINITE, low, high, varying
    if (
        smallest_magnitude_less_one != _ALL_BITS
        and np.float64(magnitudes[1]) / strength < _SMALLEST_NORMAL
    ):
        return _NEEDS_64_BIT_KEYS, low, high, varying
    return 0, low, high, varying


@numba.njit(cache=True, nogil=True)
def _keys_64(z, keys):
    """:func:`_keys_32` for the 64-bit patterns of the float64 values ``z`` themselves; status 0
    or ``_NON_FINITE``."""
    n = z.shape[0]
    key_values = keys.view(np.float64)
    low = _ALL_BITS
    high = np.uint64(0)
    varying = np.uint64(0)
    first = np.uint64(0)
    for i in range(n):
        if not np.isfinite(z[i]):
            return _NON_FINITE, low, high, varying
        key_values[i] = z[i] + 0.0  # -0.0 + 0.0 is +0.0: both zeros get the same key (a tie)
        key = _flip(keys[i], _SIGN_SHIFT_64, _LOW_63_BITS)
        keys[i] = key
        if i == 0:
            first = key
        low = min(low, key)
        high = max(high, key)
        varying |= key ^ first
    return 0, low, high, varying


@numba.njit(cache=True, nogil=True, inline="always")
def _to_offsets(counts, radix):
    """Histogram ``counts[:radix]`` to exclusive prefix sums, in place."""
    running = 0
    for b in range(radix):
        c = counts[b]
        counts[b] = running
        running += c


@numba.njit(cache=True, nogil=True)
def _scatter_pass(items, out, shift, mask, counts):
    """One stable counting pass of uint64 ``items`` into ``out`` by the digit
    ``(item >> shift) & mask``; ``counts``: that digit's histogram (consumed)."""
    _to_offsets(counts, counts.shape[0])
    for k in range(items.shape[0]):
        item = items[k]
        digit = (item >> shift) & mask
        p = counts[digit]
        counts[digit] = p + 1
        out[p] = item


@numba.njit(cache=True, nogil=True)
def _scatter_pairs_pass(keys, order, out_keys, out_order, shift, mask, counts, identity):
    """:func:`_scatter_pass` for (key, index) pairs in two arrays; with ``identity`` the indices
    are ``0..n-1`` and ``order`` is not read."""
    _to_offsets(counts, counts.shape[0])
    for k in range(keys.shape[0]):
        key = keys[k]
        digit = (key >> shift) & mask
        p = counts[digit]
        counts[digit] = p + 1
        out_keys[p] = key
        out_order[p] = k if identity else order[k]


@numba.njit(cache=True, nogil=True)
def _radix_sort(keys, spare, low, high, varying):
    """Stable sort of the indices ``0..n-1`` by ascending uint64 ``keys`` (overwritten, as is
    ``spare``); ``low``/``high``: smallest/largest key, ``varying``: OR of every key XOR the first.

    Returns:
        (sorted, free, index mask): the k-th index in sorted order is ``sorted[k] & mask``;
        ``free`` is whichever of ``keys`` and ``spare`` does not hold it.
    """
    n = keys.shape[0]
    if varying == 0:  # every key equal
        for k in range(n):
            keys[k] = np.uint64(k)
        return keys, spare, _ALL_BITS
    common_low_bits = np.uint64(0)
    while (varying >> common_low_bits) & _ONE == 0:
        common_low_bits += _ONE
    key_bits = _bit_length((high - low) >> common_low_bits)
    index_bits = _bit_length(np.uint64(n - 1))
    num_passes = (key_bits + _MAX_DIGIT_BITS - 1) // _MAX_DIGIT_BITS
    width = (key_bits + num_passes - 1) // num_passes
    radix = 1 << width
    mask = np.uint64(radix - 1)
    # Passes on (key, index) pairs until the key bits left fit beside the index in 64 bits.
    pair_passes = 0
    if key_bits + index_bits > 64:
        pair_passes = min(num_passes, (key_bits + index_bits - 64 + width - 1) // width)
    index_shift = np.uint64(index_bits)
    counts = np.zeros((num_passes, radix), np.int64)
    shifts = np.empty(num_passes, np.uint64)
    for j in range(num_passes):
        shifts[j] = np.uint64(j * width)
    # Reduce every key to its varying bits and count all digits in one read.
    for i in range(n):
        key = (keys[i] - low) >> common_low_bits
        counts[0, key & mask] += 1
        if num_passes > 1:
            counts[1, (key >> shifts[1]) & mask] += 1
            if num_passes > 2:
                counts[2, (key >> shifts[2]) & mask] += 1
                for j in range(3, num_passes):
                    counts[j, (key >> shifts[j]) & mask] += 1
        keys[i] = key if pair_passes > 0 else (key << index_shift) | np.uint64(i)
    some_key = (keys[0] >> index_shift) if pair_passes == 0 else keys[0]
    if pair_passes > 0:
        order = np.empty(n, np.int64)
        spare_order = np.empty(n, np.int64)
        identity = True
        for j in range(pair_passes):
            if counts[j, (some_key >> shifts[j]) & mask] == n:
                continue  # every key has this digit: the pass would move nothing
            _scatter_pairs_pass(
                keys, order, spare, spare_order, shifts[j], mask, counts[j], identity
            )
            identity = False
            keys, spare = spare, keys
            order, spare_order = spare_order, order
        if identity:
            for k in range(n):
                order[k] = k
        if pair_passes == num_passes:
            return order.view(np.uint64), keys, _ALL_BITS
        dropped = shifts[pair_passes]
        for k in range(n):
            keys[k] = ((keys[k] >> dropped) << index_shift) | np.uint64(order[k])
        some_key = some_key >> dropped
    else:
        dropped = np.uint64(0)
    for j in range(pair_passes, num_passes):
        if counts[j, (some_key >> (shifts[j] - dropped)) & mask] == n:
            continue
        _scatter_pass(keys, spare, shifts[j] - dropped + index_shift, mask, counts[j])
        keys, spare = spare, keys
    return keys, spare, (_ONE << index_shift) - _ONE


@numba.njit(cache=True, nogil=True)
def _project_single_blocks(
    z, starts, group_index, row_length, num_groups, centered, ranks, order, block_start
):
    """The projection when all values span less than 1 (checked by the caller): sorted, each
    group's values minus (m, ..., 1) strictly increase, so PAV pools every group into one block
    and the ranks are ``z - mean(z) + (m + 1) / 2`` (means per group). Fills the outputs as
    :func:`_project` does (``order`` within a group in index order); returns the number of
    blocks."""
    n = z.shape[0]
    if num_groups == 1:
        offset = _sum(z) / n - (0.0 if centered else (n + 1) / 2.0)
        for i in range(n):
            ranks[i] = z[i] - offset
            order[i] = i
        block_start[0] = 0
        block_start[1] = n
        return 1
    offset = np.zeros(num_groups, np.float64)
    for i in range(n):
        offset[i // row_length if row_length > 0 else group_index[i]] += z[i]
    for g in range(num_groups):
        size = starts[g + 1] - starts[g]
        if size > 0:
            offset[g] = offset[g] / size - (0.0 if centered else (size + 1) / 2.0)
    fill = starts[:-1].copy()
    for i in range(n):
        g = i // row_length if row_length > 0 else group_index[i]
        ranks[i] = z[i] - offset[g]
        order[fill[g]] = i
        fill[g] += 1
    num_blocks = 0
    for g in range(num_groups):
        if starts[g + 1] > starts[g]:
            block_start[num_blocks] = starts[g]
            num_blocks += 1
    block_start[num_blocks] = n
    return num_blocks


@numba.njit(cache=True, nogil=True)
def _value_of_key(key, sign_shift, low_bits, x_bits, z):
    """The float64 value whose key is ``key``: a 32-bit key (of float32 ``x``, given ``x_bits``
    non-empty) or a 64-bit one (of ``z``)."""
    bits = _flip(key, sign_shift, low_bits)
    if x_bits.shape[0] > 0:
        one = np.empty(1, np.uint32)
        one[0] = bits
        return np.float64(one.view(np.float32)[0])
    one64 = np.empty(1, np.uint64)
    one64[0] = bits
    return one64.view(np.float64)[0]


@numba.njit(cache=True, nogil=True)
def _project(
    x, x_bits, strength, group_index, row_length, num_groups, centered, ranks, order, block_start
):
    """Projects ``x / strength`` within each group onto its permutahedron.

    Args:
        x: (N,) float32 or float64 values, N >= 1.
        x_bits: for float32 ``x``, the same memory viewed as uint32 (then 32-bit sort keys are
            used); else empty.
        strength: the regularisation strength (float); ``z = float64(x) / strength``.
        group_index: (N,) int64 group of each value in ``[0, num_groups)``; ignored (may be empty)
            when ``row_length > 0`` or ``num_groups == 1``.
        row_length: > 0: the groups are consecutive rows of this length, value ``i`` is in group
            ``i // row_length``.
        num_groups: number of groups G.
        centered: subtract each group's mean rank ``(m + 1) / 2`` (exact: the projection keeps
            the sum of ranks).
        ranks: (N,) float32 or float64 output, soft ranks in the input order (computed in float64).
        order: (N,) int64 output, the indices grouped by group, each group in the stable
            non-increasing order of its values (the order of ``np.argsort(-z, kind="stable")``),
            or in index order where the group is one block (see :func:`_project_single_blocks`).
        block_start: (N + 1,) int64 output; PAV block ``b`` holds ``order[block_start[b]:
            block_start[b + 1]]`` (blocks never straddle groups). The projection's Jacobian is
            identity minus averaging within blocks.
    Returns:
        the number of blocks, or ``_NON_FINITE`` when some ``z`` is inf or NaN, or ``_BAD_GROUP``
        when a group id is outside ``[0, num_groups)``.
    """
    n = x.shape[0]
    starts = _group_starts(n, group_index, row_length, num_groups)
    if starts[0] < 0:
        return _BAD_GROUP
    z = np.empty(n, np.float64)
    if strength == 1.0:  # x / 1.0 is x
        for i in range(n):
            z[i] = np.float64(x[i])
    else:
        for i in range(n):
            z[i] = np.float64(x[i]) / strength
    keys = np.empty(n, np.uint64)
    status = _NEEDS_64_BIT_KEYS
    if x_bits.shape[0] == n:
        status, low, high, varying = _keys_32(x_bits, strength, keys)
        sign_shift, low_bits = _SIGN_SHIFT_32, _LOW_31_BITS
    if status == _NEEDS_64_BIT_KEYS:
        status, low, high, varying = _keys_64(z, keys)
        sign_shift, low_bits, x_bits = _SIGN_SHIFT_64, _LOW_63_BITS, x_bits[:0]
    if status < 0:
        return status
    # The smallest key is the largest value. A span below 1 needs no sort (one block per group).
    largest = _value_of_key(low, sign_shift, low_bits, x_bits, z)
    smallest = _value_of_key(high, sign_shift, low_bits, x_bits, z)
    if x_bits.shape[0] > 0:  # keys of x: scale as z was
        largest = largest / strength
        smallest = smallest / strength
    if largest - smallest < 1.0:
        return _project_single_blocks(
            z, starts, group_index, row_length, num_groups, centered, ranks, order, block_start
        )
    items, free, index_mask = _radix_sort(keys, np.empty(n, np.uint64), low, high, varying)
    sorted_z = free.view(np.float64)
    if num_groups > 1:
        # Stable counting sort by group: each group's members become contiguous, still in
        # non-increasing order of value.
        fill = starts[:-1].copy()
        for k in range(n):
            i = np.int64(items[k] & index_mask)
            g = i // row_length if row_length > 0 else group_index[i]
            p = fill[g]
            fill[g] = p + 1
            order[p] = i
            sorted_z[p] = z[i]
    else:
        for k in range(n):
            i = np.int64(items[k] & index_mask)
            order[k] = i
            sorted_z[k] = z[i]
    total = items.view(np.float64)  # free now

    num_blocks = 0
    for g in range(num_groups):
        first = starts[g]
        last = starts[g + 1]
        if first == last:
            continue
        mean_rank = (last - first + 1) / 2.0 if centered else 0.0
        # Isotonic (non-increasing) regression of the sorted values minus (m, ..., 1) by PAV.
        # Closed blocks of this group: block_start/total[bottom:top]; the open (last) block starts
        # at position open_begin and sums to open_total.
        bottom = num_blocks
        top = bottom
        open_begin = first
        open_total = sorted_z[first] - (last - first)
        for k in range(first + 1, last):
            current = sorted_z[k] - (last - k)
            # Merge while the previous block's mean is below this one's (means compared by
            # cross-multiplication: previous total * this size < this total * previous size;
            # sizes are exact in float64).
            if open_total < current * np.float64(k - open_begin):
                current = open_total + current
                begin = open_begin
                while top > bottom and (
                    total[top - 1] * np.float64(k + 1 - begin)
                    < current * np.float64(begin - block_start[top - 1])
                ):
                    top -= 1
                    current = total[top] + current
                    begin = block_start[top]
                open_begin = begin
                open_total = current
            else:
                block_start[top] = open_begin
                total[top] = open_total
                top += 1
                open_begin = k
                open_total = current
        block_start[top] = open_begin
        total[top] = open_total
        num_blocks = top + 1
        block_start[num_blocks] = last
        for b in range(bottom, num_blocks):
            begin = block_start[b]
            end = block_start[b + 1]
            if end - begin == 1:  # total / 1.0 is total
                ranks[order[begin]] = sorted_z[begin] - (total[b] + mean_rank)
                continue
            offset = total[b] / np.float64(end - begin) + mean_rank
            for k in range(begin, end):
                ranks[order[k]] = sorted_z[k] - offset
    return num_blocks


@numba.njit(cache=True, nogil=True, inline="always")
def _sum(values):
    """Sum of a float array in float64, four interleaved partial sums."""
    n = values.shape[0]
    quads = n - n % 4
    total0 = total1 = total2 = total3 = 0.0
    for i in range(0, quads, 4):
        total0 += np.float64(values[i])
        total1 += np.float64(values[i + 1])
        total2 += np.float64(values[i + 2])
        total3 += np.float64(values[i + 3])
    for i in range(quads, n):
        total0 += np.float64(values[i])
    return (total0 + total1) + (total2 + total3)


@numba.njit(cache=True, nogil=True)
def _within_block_deviation(grad, order, block_start, num_blocks, strength, out):
    """``out = (grad - mean of grad over its block) / strength``: the Jacobian of the projection
    (symmetric, so the same for the vector-Jacobian product) and of the scaling, computed in
    float64 and stored in the dtype of ``out``."""
    n = grad.shape[0]
    if num_blocks == 1:  # no indirection needed
        mean = _sum(grad) / n
        if strength == 1.0:
            for i in range(n):
                out[i] = np.float64(grad[i]) - mean
        else:
            for i in range(n):
                out[i] = (np.float64(grad[i]) - mean) / strength
        return
    # Singleton blocks (most of them at small strengths) give (g - g) / strength: 0, or NaN for
    # a non-finite g. Write that everywhere first, then the blocks of two or more values.
    for i in range(n):
        g = np.float64(grad[i])
        out[i] = (g - g) / strength
    for b in range(num_blocks):
        begin = block_start[b]
        end = block_start[b + 1]
        if end - begin == 1:
            continue
        total = 0.0
        for k in range(begin, end):
            total += np.float64(grad[order[k]])
        mean = total / np.float64(end - begin)
        for k in range(begin, end):
            i = order[k]
            out[i] = (np.float64(grad[i]) - mean) / strength


def _cpu_array(t: torch.Tensor) -> np.ndarray:
    """``t`` flattened into a contiguous CPU float32/float64 numpy array; no copy when it
    already is one."""
    t = t.detach()
    if not t.is_cpu or t.dtype not in _KERNEL_DTYPES:
        t = t.to("cpu", torch.float64)
    return t.contiguous().numpy().reshape(-1)


def _as_output(values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """``values`` as a tensor of the shape, dtype and device of ``like``."""
    out = torch.from_numpy(values.reshape(like.shape))
    if out.dtype != like.dtype or not like.is_cpu:
        out = out.to(like.device, like.dtype)
    return out


def _numba_projection(x, groups, row_length, num_groups, strength, centered):
    """Soft ranks of ``x / strength`` within groups by :func:`_project`, on the CPU whatever the
    device of ``x``.

    Args:
        x: (...) floating-point values, flattened to (N,), N >= 1.
        groups: (N,) integer tensor of group ids, or None when ``row_length > 0`` or
            ``num_groups == 1``.
        row_length, num_groups, strength, centered: as for :func:`_project`.
    Returns:
        (ranks with the shape, dtype and device of ``x``, vjp): ``vjp(grad)`` is the gradient
        w.r.t. ``x`` for the gradient ``grad`` (shaped like ``x``) of the ranks.
    """
    if groups is None:
        group_np = _NO_GROUPS
    else:
        group_np = groups.detach().to("cpu", torch.int64).contiguous().numpy().reshape(-1)
    values = _cpu_array(x)
    n = values.shape[0]
    ranks = np.empty(n, values.dtype)
    order = np.empty(n, np.int64)
    block_start = np.empty(n + 1, np.int64)
    # 32-bit sort keys for float32 values (their indices must fit in 32 bits too).
    bits = values.view(np.uint32) if values.dtype == np.float32 and n < 2**32 else _NO_BITS
    num_blocks = _project(
        values,
        bits,
        strength,
        group_np,
        row_length,
        num_groups,
        centered,
        ranks,
        order,
        block_start,
    )
    if num_blocks < 0:
        if num_blocks == _NON_FINITE:
            raise ValueError(NON_FINITE_MESSAGE)
        raise ValueError(f"group_index must lie in [0, num_groups={num_groups})")
    vjp = functools.partial(_numba_vjp, order, block_start, num_blocks, strength)
    return _as_output(ranks, x), vjp


def _numba_vjp(order, block_start, num_blocks, strength, grad):
    """Gradient w.r.t. ``x`` by :func:`_within_block_deviation`, the other arguments from
    :func:`_project`; like ``grad``."""
    grad_np = _cpu_array(grad)
    grad_x = np.empty(grad_np.shape[0], grad_np.dtype)
    _within_block_deviation(grad_np, order, block_start, num_blocks, strength, grad_x)
    return _as_output(grad_x, grad)


def _max_slope_ahead(height, position, limit, reach):
    """Steepest slope from each point to a later point within reach.

    Args:
        height, position: (R,) float64 coordinates of points, ``position`` increasing.
        limit: (R,) float64; point ``r`` reaches the points ``r' > r`` with
            ``position[r'] <= limit[r]`` and ``r' - r <= reach`` (int).
    Returns:
        (R,) float64, max over the points ``r'`` reached of
        ``(height[r'] - height[r]) / (position[r'] - position[r])``; -inf where none is.
    """
    count = height.shape[0]
    padded_height = torch.cat([height, height.new_zeros(reach)])
    padded_position = torch.cat([position, position.new_full((reach,), math.inf)])  # past limits
    best = height.new_full((count,), -math.inf)
    step = max(1, _PAIRS_PER_CHUNK // count)
    for first in range(1, reach + 1, step):
        span = min(step, reach + 1 - first)
        # (R, span) views: [r, j] is point r + first + j.
        ahead_height = padded_height[first : first + count + span - 1].unfold(0, span, 1)
        ahead_position = padded_position[first : first + count + span - 1].unfold(0, span, 1)
        slope = (ahead_height - height[:, None]) / (ahead_position - position[:, None])
        slope = slope.masked_fill(ahead_position > limit[:, None], -math.inf)
        best = torch.maximum(best, slope.amax(1))
    return best


def _cumulative(values):
    """(N + 1,) sums of the first 0, 1, ..., N of the (N,) ``values``."""
    return torch.cat([values.new_zeros(1), values.cumsum(0)])


def _block_means(values, cumulative, block_start, block_end):
    """(N,) mean of ``values`` over the block of each position; ``cumulative``:
    ``_cumulative(values)``; ``block_start``/``block_end``: (N,) the block's positions
    ``[start, end)``. A block of one value keeps it exactly (no rounding of the sums)."""
    size = block_end - block_start
    means = (cumulative[block_end] - cumulative[block_start]) / size
    return torch.where(size == 1, values, means)


def _pool_adjacent_violators(points, heights, inner):
    """One parallel round of PAV: drops every cut between two blocks whose means rise (in a run
    of rising means, PAV would pool all of them).

    Args:
        points: (R,) int64 increasing positions of the cuts between blocks of the values (point k
            precedes value k), among them every group end.
        heights: (N + 1,) float64 cumulative sums of the values (see :func:`_cumulative`).
        inner: (N + 1,) bool, False at the group ends, which stay.
    Returns:
        (R',) the points kept, R' <= R.
    """
    height = heights[points]
    means = (height[1:] - height[:-1]) / (points[1:] - points[:-1]).to(torch.float64)
    pooled = torch.zeros_like(points, dtype=torch.bool)
    pooled[1:-1] = inner[points[1:-1]] & (means[:-1] < means[1:])
    return points[~pooled]


def _concave_vertices(height, position, lower, upper, reach):
    """Which points are vertices of the least concave majorant of the points of their group,
    collinear ones included: those where the least slope from an earlier point is at least the
    greatest slope to a later one (a group's first and last points always are).

    Args:
        height, position: (R,) float64 points, ``position`` increasing.
        lower, upper: (R,) float64 positions of the first and the last point of each point's group.
        reach: each point is compared with the points of its group up to this many places before
            and after it (int); exact when that covers the groups, else a superset of the vertices
            (fewer slopes compared).
    Returns:
        (R,) bool.
    """
    to_later = _max_slope_ahead(height, position, upper, reach)
    # The least slope from an earlier point: the greatest slope ahead with the points mirrored.
    mirrored = _max_slope_ahead(height.flip(0), -position.flip(0), -lower.flip(0), reach)
    return -mirrored.flip(0) >= to_later


def _torch_projection(x, groups, row_length, num_groups, strength, centered):
    """:func:`_numba_projection` with torch operations on the device of ``x``.

    Within a group of m sorted values, PAV's blocks for ``s = z_sorted - (m, ..., 1)`` are cut at
    the vertices of the least concave majorant of the points ``(k, s_0 + ... + s_{k-1})``,
    ``k = 0..m``, collinear ones included (PAV pools only strictly rising means). Parallel rounds
    of PAV (:func:`_pool_adjacent_violators`) first drop most points that are not, as long as a
    round drops a quarter of them. The points left are compared with each other, first within a
    short reach: that cuts at every vertex and maybe more, and is exact if no block's mean
    exceeds the previous one's (a spurious cut inside a true block leaves a first part with a
    smaller mean than the last); else the reach grows. The sums use ``s`` minus the group's first
    value (slopes all shift alike) to keep them small; blocks are averaged as differences of
    cumulative sums, so the ranks' rounding error grows as ``max|z| * N * 2**-53`` (the kernel's
    as ``max|z| * 2**-53``). Host syncs: two, plus one per round and per reach.

    Args, Returns: as for :func:`_numba_projection`.
    """
    z = x.detach().reshape(-1).to(torch.float64)
    if strength != 1.0:
        z = z / strength
    z = z + 0.0  # -0.0 + 0.0 is +0.0: both zeros tie (a radix sort would order them by their bits)
    n = z.shape[0]
    index = torch.arange(n, device=z.device)
    if groups is None:
        groups = index // row_length if row_length > 0 else torch.zeros_like(index)
    groups = groups.detach().reshape(-1).to(z.device, torch.int64)
    finite, known_groups = torch.stack(
        [torch.isfinite(z).all(), ((groups >= 0) & (groups < num_groups)).all()]
    ).tolist()
    if not finite:
        raise ValueError(NON_FINITE_MESSAGE)
    if not known_groups:
        raise ValueError(f"group_index must lie in [0, num_groups={num_groups})")

    # Positions 0..N-1 of the values sorted by group, then by non-increasing z (both stable).
    order = torch.sort(z, descending=True, stable=True).indices
    if num_groups > 1:
        order = order[torch.sort(groups[order], stable=True).indices]
    sorted_groups = groups[order]
    # Group g at positions [bounds[g], bounds[g + 1]); (N,) those of each position's group.
    bounds = torch.searchsorted(sorted_groups, torch.arange(num_groups + 1, device=z.device))
    group_start = bounds[sorted_groups]
    group_end = bounds[sorted_groups + 1]
    sorted_z = z[order]
    s = sorted_z - (group_end - index).to(torch.float64)  # minus (m, ..., 1)
    first = s[group_start]
    shifted = s - first
    heights = _cumulative(shifted)

    # Points 0..N, point k before position k, with their group's first and last points.
    points = torch.arange(n + 1, device=z.device)
    point_start = torch.cat([group_start, group_start.new_full((1,), n)])
    point_end = torch.cat([group_end, group_end.new_full((1,), n)])
    inner = point_start != points
    while True:
        kept = _pool_adjacent_violators(points, heights, inner)
        few_dropped = 4 * (points.shape[0] - kept.shape[0]) < points.shape[0]
        points = kept
        if few_dropped:
            break
    is_kept = torch.zeros(n + 1, dtype=torch.bool, device=z.device)
    is_kept[points] = True
    count = is_kept.cumsum(0)
    width = int((count[point_end[points]] - count[point_start[points]]).max())
    coordinates = (
        heights[points],
        points.to(torch.float64),
        point_start[points].to(torch.float64),
        point_end[points].to(torch.float64),
    )
    reach = min(width, max(1, _FIRST_PAIRS // points.shape[0]))
    while True:
        cut = torch.zeros(n + 1, dtype=torch.bool, device=z.device)
        cut[points] = _concave_vertices(*coordinates, reach)
        # Each position's block [start, end): the last cut at or before it, the first after it.
        block_start = torch.where(cut[:n], index, 0).cummax(0).values
        block_end = torch.where(cut[1:], index + 1, n).flip(0).cummin(0).values.flip(0)
        means = _block_means(shifted, heights, block_start, block_end)
        if reach == width:
            break
        rising = cut[1:n] & inner[1:n] & (means[:-1] < means[1:])
        if not bool(rising.any()):
            break
        reach = min(width, 4 * reach)

    sorted_ranks = sorted_z - (first + means)
    if centered:
        sorted_ranks = sorted_ranks - (group_end - group_start + 1).to(torch.float64) / 2
    ranks = torch.empty_like(z).index_copy_(0, order, sorted_ranks)
    vjp = functools.partial(_torch_vjp, order, block_start, block_end, strength)
    return ranks.to(x.dtype).reshape(x.shape), vjp


def _torch_vjp(order, block_start, block_end, strength, grad):
    """``(grad - mean of grad over its block) / strength`` (see :func:`_within_block_deviation`)
    on the device of ``grad``, in float64, returned like ``grad``; the other arguments from
    :func:`_torch_projection`."""
    sorted_grad = grad.reshape(-1).to(torch.float64)[order]
    means = _block_means(sorted_grad, _cumulative(sorted_grad), block_start, block_end)
    grad_x = torch.empty_like(sorted_grad).index_copy_(0, order, (sorted_grad - means) / strength)
    return grad_x.to(grad.dtype).reshape(grad.shape)


def _projection(backend: str, device: torch.device):
    """The projection that ``backend`` (one of ``_OWN_BACKENDS``) runs for a tensor on
    ``device``: "native" is the torch operations for CUDA tensors (on the device: no copy to the
    host and back) and the numba kernel for any other (CPU; devices without float64 too)."""
    if backend == "native":
        backend = "torch" if device.type == "cuda" else "numba"
    return _numba_projection if backend == "numba" else _torch_projection


class _PermutahedronProjection(torch.autograd.Function):
    """Soft ranks of ``x / strength`` within groups by ``projection`` (:func:`_numba_projection`
    or :func:`_torch_projection`, same arguments); exact Jacobian in backward. ``x`` may have any
    shape (flattened inside, so that no view nodes enter the graph)."""

    @staticmethod
    def forward(ctx, x, projection, groups, row_length, num_groups, strength, centered):
        ranks, ctx.vjp = projection(x, groups, row_length, num_groups, strength, centered)
        return ranks

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        return ctx.vjp(grad), None, None, None, None, None, None


def _project_autograd(x, projection, groups, row_length, num_groups, strength, centered):
    """Soft ranks of ``x`` by ``projection`` (see :class:`_PermutahedronProjection`), through
    autograd when it needs to."""
    args = (groups, row_length, num_groups, strength, centered)
    if x.requires_grad and torch.is_grad_enabled():
        return _PermutahedronProjection.apply(x, projection, *args)
    return projection(x, *args)[0]


def _check_inputs(x: torch.Tensor, strength: float) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(
            f"soft_rank expects a floating-point tensor, got {type(x).__name__} "
            f"{getattr(x, 'dtype', '')}"
        )
    if not (isinstance(strength, (int, float)) and math.isfinite(strength) and strength > 0):
        raise ValueError(f"soft_rank strength must be a positive finite number, got {strength!r}")


def soft_rank(x: torch.Tensor, strength: float = 1.0, *, backend: str = "native") -> torch.Tensor:
    """Differentiable ranks along the last dimension, ascending (the smallest value gets rank 1).

    The l2 soft rank is the projection of ``x / strength`` onto the permutahedron of ``(1..n)``.
    As ``strength -> 0`` it tends to the exact ranks (ties share their block's mean rank); exact
    ranks are reached once every gap between sorted values exceeds ``strength``. Large strengths
    pool everything into one block: then the ranks are the affine map
    ``x / strength - mean(x) / strength + (n + 1) / 2``.

    Note:
        ``strength=1.0`` is torchsort's and the Correlation Loss code's default. For inputs in
        [0, 1] (probabilities, IoUs) it pools everything into one block for every n >= 2, so a
        "Spearman" correlation computed on such ranks equals Pearson's in value and gradient. A
        true rank correlation needs a strength well below ``2 * range(x) / n``.

    Args:
        x: (..., n) floating-point tensor, finite, on any device.
        strength: regularisation strength ``eps > 0``.
        backend: "native" (this module's exact projection for the tensor's device: "torch" for
            CUDA tensors, else "numba"), "numba" (the compiled CPU kernel; tensors on other
            devices go to the host and back), "torch" (torch operations on the tensor's device) or
            "torchsort" (requires torchsort installed).
    Returns:
        (..., n) soft ranks with the dtype and device of ``x``; differentiable w.r.t. ``x``.
    """
    _check_inputs(x, strength)
    if backend not in SOFT_RANK_BACKENDS:
        raise ValueError(f"soft_rank backend must be one of {SOFT_RANK_BACKENDS}, got {backend!r}")
    if x.dim() == 0:
        raise ValueError("soft_rank needs at least one dimension to rank along, got a scalar")
    n = x.shape[-1]
    if x.numel() == 0:
        return x * 0
    if backend == "torchsort":
        try:
            import torchsort
        except ImportError as e:
            raise ImportError(
                "soft_rank(backend='torchsort') needs the optional package torchsort "
                "(pip install torchsort); backend='native' needs nothing"
            ) from e
        rows = x.reshape(-1, n)
        if not bool(torch.isfinite(rows).all()):
            raise ValueError(NON_FINITE_MESSAGE)
        ranks = torchsort.soft_rank(rows, regularization="l2", regularization_strength=strength)
        return ranks.reshape(x.shape)

    projection = _projection(backend, x.device)
    return _project_autograd(x, projection, None, n, x.numel() // n, float(strength), False)


def grouped_soft_rank(
    x: torch.Tensor,
    group_index: torch.Tensor,
    num_groups: int,
    strength: float = 1.0,
    *,
    centered: bool = False,
    backend: str = "native",
) -> torch.Tensor:
    """Soft ranks of ``x`` computed separately within each group (see :func:`soft_rank`).

    Args:
        x: (N,) floating-point values.
        group_index: (N,) int64 group of each value, in ``[0, num_groups)``.
        num_groups: number of groups G.
        strength: regularisation strength ``eps > 0``.
        centered: subtract each group's mean rank ``(m_g + 1) / 2`` in float64 before casting to
            the dtype of ``x``; keeps float32 precision for groups of thousands of values.
        backend: "native", "numba" or "torch", as for :func:`soft_rank`.
    Returns:
        (N,) ranks in ``1..m_g`` within each group g of size ``m_g`` (or centred); differentiable
        w.r.t. ``x``.
    """
    _check_inputs(x, strength)
    if backend not in _OWN_BACKENDS:
        raise ValueError(
            f"grouped_soft_rank backend must be one of {_OWN_BACKENDS}, got {backend!r}"
        )
    if x.numel() == 0:
        return x * 0
    groups = None if num_groups == 1 else group_index  # every valid id is 0: no need to read them
    projection = _projection(backend, x.device)
    return _project_autograd(
        x, projection, groups, 0, int(num_groups), float(strength), bool(centered)
    )
