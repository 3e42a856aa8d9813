"""Chapter 3 exercises: positional encoding.

Five questions: learned relative-position biases clipped at a distance K, the rotation that
shifts the [sin | cos] variant of the sinusoid (a derivation), ALiBi's distance penalty for a
causal decoder, RoPE's angles with position interpolation for sequences longer than the trained
ones, and rotary embeddings in the half-split layout of GPT-NeoX and LLaMA; then

6. predict, then run: which of four heat maps (``position_maps()``) shows which encoding;
7. debugging: RoPE applied to queries that sit at the end of a sequence (the newest tokens);
8. build with the library: a trained ``LearnedPositionalEmbedding`` stretched to more (or
   fewer) positions by linear interpolation of its rows.

Usage: ``from tfbook.exercises import ch03 as ex; ex.q1.check(sinusoidal_table)``.
"""

from __future__ import annotations

import math

import torch

from tfbook.exercises._engine import (
    Case,
    ExerciseSet,
    Mistake,
    Question,
    compare,
)
from tfbook.positional import (
    LearnedPositionalEmbedding,
    apply_rotary,
    sinusoidal_encoding,
)

_BASE = 10000.0


# --------------------------------------------------------------------------- q1: relative


def relative_bias(table, seq_len):
    """Learned relative-position biases (Shaw et al.), clipped at K, for an encoder.

    ``table`` is (n_heads, 2K + 1): column c holds the bias of the offset c - K. Entry
    [h, m, n] of the (n_heads, seq_len, seq_len) result is table[h, clip(n - m, -K, K) + K],
    for a query at position m and a key at position n; every pair is allowed (no mask).
    """
    k_max = (table.shape[-1] - 1) // 2
    positions = torch.arange(seq_len)
    offset = positions[None, :] - positions[:, None]  # (T, T): key position n minus query m
    column = offset.clamp(-k_max, k_max) + k_max  # (T, T), in 0 .. 2K
    return table[:, column]  # (n_heads, T, T)


def _q1_lookup(table, seq_len, *, offset, clip, shift=True):
    k_max = (table.shape[-1] - 1) // 2
    m = torch.arange(seq_len)[:, None]
    n = torch.arange(seq_len)[None, :]
    column = clip(offset(m, n), k_max)
    if shift:
        column = column + k_max
    return table[:, column]


def _key_minus_query(m, n):
    return n - m


def _clip(o, k_max):
    return o.clamp(-k_max, k_max)


def _q1_query_minus_key(table, seq_len):
    return _q1_lookup(table, seq_len, offset=lambda m, n: m - n, clip=_clip)


def _q1_absolute(table, seq_len):
    return _q1_lookup(
        table, seq_len, offset=lambda m, n: (n - m).abs(), clip=lambda o, k: o.clamp(max=k)
    )


def _q1_no_shift(table, seq_len):
    # a negative column counts from the end of the table: offset -1 reads column 2K
    return _q1_lookup(table, seq_len, offset=_key_minus_query, clip=_clip, shift=False)


def _q1_clip_one_short(table, seq_len):
    return _q1_lookup(
        table, seq_len, offset=_key_minus_query, clip=lambda o, k: o.clamp(-k, max(k - 1, 0))
    )


def _q1_clip_above_only(table, seq_len):
    # offsets below -K give negative columns, which count from the end of the table
    return _q1_lookup(table, seq_len, offset=_key_minus_query, clip=lambda o, k: o.clamp(max=k))


def _q1_wrap(table, seq_len):
    width = table.shape[-1]
    k_max = (width - 1) // 2
    m = torch.arange(seq_len)[:, None]
    n = torch.arange(seq_len)[None, :]
    return table[:, (n - m + k_max) % width]


def _q1_cases():
    gen = torch.Generator().manual_seed(31)

    def table(n_heads, k_max, dtype=torch.float32):
        return torch.randn(n_heads, 2 * k_max + 1, generator=gen, dtype=torch.float64).to(dtype)

    return [
        Case("4 heads, K = 3, T = 6", (table(4, 3), 6)),
        Case("2 heads, K = 2, T = 9: most pairs beyond the clip", (table(2, 2), 9)),
        Case("one head, K = 8, T = 3: no offset reaches the clip", (table(1, 8), 3)),
        Case("3 heads, K = 0: one column, the same bias everywhere", (table(3, 0), 5)),
        Case("2 heads, K = 4, one position", (table(2, 4), 1)),
        Case("float64 table, 8 heads, K = 16, T = 40", (table(8, 16, torch.float64), 40)),
        Case(
            "one head, K = 32, T = 2000 (longer than any table you might build)",
            (table(1, 32), 2000),
        ),
        Case("large biases (|b| ~ 1e4), 2 heads, K = 5, T = 12", (1e4 * table(2, 5), 12)),
    ]


q1 = Question(
    "ch03.q1",
    "Relative position biases, clipped",
    reference=relative_bias,
    cases=_q1_cases,
    mistakes=[
        Mistake(
            "offset taken as query minus key (m - n)",
            _q1_query_minus_key,
            "The offset is the key's position minus the query's, n - m: a key after the query "
            "has a positive offset and reads a column right of the middle one. With m - n every "
            "map comes out transposed.",
        ),
        Mistake(
            "distance |n - m| instead of the signed offset",
            _q1_absolute,
            "The table has 2K + 1 columns so that a key K positions before the query and one "
            "K positions after it can get different biases. Keep the sign of n - m; only "
            "offset 0 reads the middle column K.",
        ),
        Mistake(
            "no + K: negative offsets read columns from the end of the table",
            _q1_no_shift,
            "Columns are numbered 0 .. 2K and offset -K sits in column 0: add K after "
            "clipping. Without it, offset -1 becomes index -1, which torch reads as the last "
            "column (offset +K), so no error warns you.",
        ),
        Mistake(
            "clipped to K - 1 above: offset +K never reaches the last column",
            _q1_clip_one_short,
            "Both ends are inclusive: clip to [-K, K], then add K, which gives columns 0 .. 2K.",
        ),
        Mistake(
            "clipped above only: offsets below -K wrap around",
            _q1_clip_above_only,
            "Keys more than K positions before the query must all read column 0 (offset -K). "
            "Clamp below as well; an index below 0 counts from the end of the table.",
        ),
        Mistake(
            "offsets wrapped around (modulo 2K + 1) instead of clipped",
            _q1_wrap,
            "Clipping means every offset beyond K reads the bias of K (and every one below -K "
            "that of -K); far keys share one bias. A modulo makes offset K + 1 read the bias of "
            "-K instead.",
        ),
    ],
    hints=[
        "Build a (T, T) table of offsets from a column of query positions and a row of key "
        "positions; clamp it, shift it, and use it as an index into the table's last axis.",
        "Indexing table[:, idx] with a (T, T) integer tensor idx gives a (n_heads, T, T) "
        "result in one step, in the table's own dtype.",
    ],
    atol=0.0,
    rtol=0.0,
    check_dtype=True,
    kind="implement",
    library_note="none: tfbook adds absolute or rotary positions, not learned relative biases",
)


# --------------------------------------------------------------------------- q2


def shift_matrix_concat(delta, d_model):
    """M with PE[k + delta] = M @ PE[k] for the [sin | cos] layout PE[k] = (sin(k w), cos(k w))."""
    half = d_model // 2
    i = torch.arange(half)
    phi = delta * 10000.0 ** (-2 * i.to(torch.float64) / d_model)  # how far pair i turns
    c, s = torch.cos(phi), torch.sin(phi)
    m = torch.zeros(d_model, d_model, dtype=torch.float64)
    # sin(a + phi) = cos(phi) sin(a) + sin(phi) cos(a): row i reads column i and column i + half
    m[i, i], m[i, i + half] = c, s
    # cos(a + phi) = -sin(phi) sin(a) + cos(phi) cos(a)
    m[i + half, i], m[i + half, i + half] = -s, c
    return m


def _q2_matrix(delta, d_model, *, angle, sign=1.0, interleaved=False):
    half = d_model // 2
    m = torch.zeros(d_model, d_model, dtype=torch.float64)
    for i in range(half):
        phi = angle(delta, i, d_model)
        c, s = math.cos(phi), sign * math.sin(phi)
        sin_row, cos_row = (2 * i, 2 * i + 1) if interleaved else (i, i + half)
        m[sin_row, sin_row], m[sin_row, cos_row] = c, s
        m[cos_row, sin_row], m[cos_row, cos_row] = -s, c
    return m


def _q2_angle(t, i, d):
    return t * _BASE ** (-2 * i / d)


def _q2_interleaved(delta, d_model):
    return _q2_matrix(delta, d_model, angle=_q2_angle, interleaved=True)


def _q2_textbook(delta, d_model):
    return _q2_matrix(delta, d_model, angle=_q2_angle, sign=-1.0)


def _q2_no_frequency(delta, d_model):
    return _q2_matrix(delta, d_model, angle=lambda t, i, d: float(t))


def _q2_cases():
    gen = torch.Generator().manual_seed(5)
    cases = []
    for n in range(3):
        delta = int(torch.randint(1, 40, (1,), generator=gen))
        d_model = 2 * int(torch.randint(2, 7, (1,), generator=gen))
        cases.append(Case(f"random, seed 5 #{n}", (delta, d_model)))
    cases += [
        Case("backwards shift", (-5, 8)),
        Case("no shift (identity)", (0, 4)),
        Case("d_model=2", (1, 2)),
    ]
    return cases


q2 = Question(
    "ch03.q2",
    "The shift matrix of the [sin | cos] layout",
    reference=shift_matrix_concat,
    cases=_q2_cases,
    mistakes=[
        Mistake(
            "blocks placed for the interleaved layout",
            _q2_interleaved,
            "In the [sin | cos] layout the sine of pair i is column i and its cosine is column "
            "i + d_model/2, so the four entries of pair i sit at rows and columns i and "
            "i + d_model/2, not at 2i and 2i + 1.",
        ),
        Mistake(
            "rotation in the wrong direction ([[c, -s], [s, c]])",
            _q2_textbook,
            "The textbook rotation [[c, -s], [s, c]] acts on (cos, sin) pairs; ours are "
            "(sin, cos). Expand sin(a + phi) and cos(a + phi) to get the signs.",
        ),
        Mistake(
            "the same angle delta for every pair",
            _q2_no_frequency,
            "Pair i turns by delta * w_i, with its own frequency w_i = 10000 ** (-2i/d_model), "
            "not by delta radians.",
        ),
    ],
    hints=[
        "Start from the interleaved M(delta) of the chapter: the same four numbers per pair, "
        "cos(phi), sin(phi), -sin(phi), cos(phi) with phi = delta * w_i; only their places change.",
        "Pair i lives in columns i (sine) and i + d_model/2 (cosine). Expand sin(a + phi) and "
        "cos(a + phi) with a = k * w_i to see which coefficient goes where.",
        "m[i, i] = cos(phi), m[i, i + half] = sin(phi), m[i + half, i] = -sin(phi), "
        "m[i + half, i + half] = cos(phi).",
    ],
    kind="derive",
    library_note="none: the shift matrix is derived in the chapter, tfbook needs only the table",
)

# --------------------------------------------------------------------------- q3: ALiBi


def alibi_bias(n_heads, t_q, t_k):
    """ALiBi's bias for a causal decoder, added to the (n_heads, t_q, t_k) scores.

    The queries are the last t_q of t_k positions. Head h (h = 1 .. n_heads) has the slope
    m_h = 2^(-8 h / n_heads); a key j at or before the query's position i gets -m_h (i - j),
    a key after it -inf (the causal mask).
    """
    slopes = 2.0 ** (-8.0 * torch.arange(1, n_heads + 1, dtype=torch.float64) / n_heads)
    i = torch.arange(t_k - t_q, t_k, dtype=torch.float64)[:, None]  # (t_q, 1): query positions
    j = torch.arange(t_k, dtype=torch.float64)[None, :]  # (1, t_k): key positions
    distance = i - j  # (t_q, t_k), negative for keys in the future
    bias = slopes[:, None, None] * (j - i)  # -m_h (i - j): (n_heads, t_q, t_k), +0 on the diagonal
    bias = bias.masked_fill(distance < 0, float("-inf"))
    return bias.to(torch.float32)


def _alibi_variant(
    n_heads,
    t_q,
    t_k,
    *,
    first=1,
    slopes=None,
    sign=-1.0,
    start=None,
    future=float("-inf"),
    symmetric=False,
):
    h = torch.arange(first, first + n_heads, dtype=torch.float64)
    m = 2.0 ** (-8.0 * h / n_heads) if slopes is None else slopes(h)
    i0 = t_k - t_q if start is None else start
    i = torch.arange(i0, i0 + t_q, dtype=torch.float64)[:, None]
    j = torch.arange(t_k, dtype=torch.float64)[None, :]
    distance = (i - j).abs() if symmetric else i - j
    bias = sign * m[:, None, None] * distance
    if not symmetric:
        bias = bias.masked_fill(i - j < 0, future)
    return bias.to(torch.float32)


def _alibi_slopes_from_zero(n_heads, t_q, t_k):
    return _alibi_variant(n_heads, t_q, t_k, first=0)


def _alibi_slopes_for_eight(n_heads, t_q, t_k):
    return _alibi_variant(n_heads, t_q, t_k, slopes=lambda h: 2.0**-h)


def _alibi_reward(n_heads, t_q, t_k):
    return _alibi_variant(n_heads, t_q, t_k, sign=1.0)


def _alibi_queries_first(n_heads, t_q, t_k):
    return _alibi_variant(n_heads, t_q, t_k, start=0)


def _alibi_no_mask(n_heads, t_q, t_k):
    return _alibi_variant(n_heads, t_q, t_k, symmetric=True)


def _alibi_future_zero(n_heads, t_q, t_k):
    return _alibi_variant(n_heads, t_q, t_k, future=0.0)


def _alibi_mask_from_zero(n_heads, t_q, t_k):
    bias = _alibi_variant(n_heads, t_q, t_k, future=0.0)
    allowed = torch.ones(t_q, t_k, dtype=torch.bool).tril()
    return bias.masked_fill(~allowed, float("-inf"))


def _alibi_diagonal_masked(n_heads, t_q, t_k):
    bias = _alibi_variant(n_heads, t_q, t_k)
    i = torch.arange(t_k - t_q, t_k)[:, None]
    return bias.masked_fill(i == torch.arange(t_k)[None, :], float("-inf"))


def _alibi_cases() -> list[Case]:
    return [
        Case("8 heads, T_q = T_k = 5", (8, 5, 5)),
        Case("4 heads, the last 3 queries of 7 positions", (4, 3, 7)),
        Case("one head, T = 4: slope 2^-8", (1, 4, 4)),
        Case("3 heads (not a power of two), T = 4", (3, 4, 4)),
        Case("16 heads, the last 2 queries of 6", (16, 2, 6)),
        Case("2 heads, one query after 10000 keys (longer than any table)", (2, 1, 10000)),
        Case("one head, one position", (1, 1, 1)),
    ]


q3 = Question(
    "ch03.q3",
    "ALiBi: a distance penalty instead of position vectors",
    reference=alibi_bias,
    cases=_alibi_cases,
    mistakes=[
        Mistake(
            "slopes counted from h = 0: the first head's slope is 1",
            _alibi_slopes_from_zero,
            "Heads are numbered h = 1 .. n_heads, so the first slope is 2^(-8 / n_heads) and "
            "the last one 2^-8.",
        ),
        Mistake(
            "slopes 2^-h, right for 8 heads only",
            _alibi_slopes_for_eight,
            "The exponent is -8 h / n_heads: the slopes always run from 2^(-8 / n_heads) down "
            "to 2^-8, whatever the number of heads.",
        ),
        Mistake(
            "penalty added with the wrong sign",
            _alibi_reward,
            "Distant keys must lose score: the bias is -m_h (i - j), zero on the diagonal and "
            "more negative the further back the key is.",
        ),
        Mistake(
            "queries placed at positions 0 .. T_q - 1",
            _alibi_queries_first,
            "The queries are the newest T_q tokens: query a sits at position T_k - T_q + a "
            "(as in exercise 3.7), so its distance to key j is T_k - T_q + a - j.",
        ),
        Mistake(
            "no causal mask: -m |i - j| for future keys as well",
            _alibi_no_mask,
            "In a decoder a query may not read later keys: put -inf where j > i.",
        ),
        Mistake(
            "causal mask placed as if the queries were positions 0 .. T_q - 1",
            _alibi_mask_from_zero,
            "tril() of a (T_q, T_k) matrix lets query a read keys 0 .. a only. The queries are "
            "the last T_q positions, so query a may read keys 0 .. T_k - T_q + a: mask where "
            "the distance i - j is negative.",
        ),
        Mistake(
            "the diagonal masked: a query cannot read its own key",
            _alibi_diagonal_masked,
            "The key at the query's own position has distance 0 and bias 0: only keys with "
            "j > i get -inf.",
        ),
        Mistake(
            "future keys given 0 instead of -inf",
            _alibi_future_zero,
            "A bias of 0 leaves a future key's score as it is, the best a key can get here; "
            "-inf removes it from the softmax.",
        ),
    ],
    hints=[
        "Build the query positions (the last T_q of 0 .. T_k - 1) as a column and the key "
        "positions as a row: their difference is a (T_q, T_k) table of distances.",
        "The slopes are a (n_heads,) tensor; give it two new axes so that it multiplies the "
        "distance table into (n_heads, T_q, T_k). Where the distance is negative, the key is in "
        "the future.",
    ],
    check_dtype=True,
    kind="implement",
    library_note="none: tfbook uses sinusoidal, learned and rotary positions, not ALiBi",
)


# --------------------------------------------------------------------------- q4: interpolation


def interpolated_angles(seq_len, d, train_len):
    """RoPE's (seq_len, d/2) angle table with position interpolation, in float64.

    Position m rotates pair i by m' theta_i, theta_i = 10000^(-2i/d); m' = m when the sequence
    fits the trained length, and m' = m * train_len / seq_len when it is longer, so every
    position lands inside the trained range [0, train_len).
    """
    m = torch.arange(seq_len, dtype=torch.float64)  # (T,)
    if seq_len > train_len:
        m = m * (train_len / seq_len)  # squeeze T positions into [0, train_len)
    theta = _BASE ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # (d/2,)
    return m[:, None] * theta[None, :]  # (T, d/2)


def _pi_variant(seq_len, d, train_len, *, scale=None, exponent=2.0, start=0, dtype=None):
    m = torch.arange(start, start + seq_len, dtype=torch.float64)
    if scale is not None:
        m = m * scale(seq_len, train_len)
    theta = _BASE ** (-exponent * torch.arange(0, d // 2, dtype=torch.float64) / d)
    angles = m[:, None] * theta[None, :]
    if dtype is not None:
        angles = (
            torch.arange(start, start + seq_len, dtype=dtype)[:, None]
            * (scale(seq_len, train_len) if scale else 1.0)
            * theta.to(dtype)[None, :]
        ).to(torch.float64)
    return angles


def _pi_inverted(seq_len, d, train_len):
    return _pi_variant(seq_len, d, train_len, scale=lambda t, n: max(1.0, t / n))


def _pi_always(seq_len, d, train_len):
    return _pi_variant(seq_len, d, train_len, scale=lambda t, n: n / t)


def _pi_extrapolated(seq_len, d, train_len):
    return _pi_variant(seq_len, d, train_len)


def _pi_last_aligned(seq_len, d, train_len):
    return _pi_variant(
        seq_len, d, train_len, scale=lambda t, n: (n - 1) / (t - 1) if t > n else 1.0
    )


def _pi_linspace(seq_len, d, train_len):
    return _pi_variant(seq_len, d, train_len, scale=lambda t, n: n / (t - 1) if t > n else 1.0)


def _pi_exponent_without_two(seq_len, d, train_len):
    return _pi_variant(
        seq_len, d, train_len, scale=lambda t, n: n / t if t > n else 1.0, exponent=1.0
    )


def _pi_float32(seq_len, d, train_len):
    return _pi_variant(
        seq_len, d, train_len, scale=lambda t, n: n / t if t > n else 1.0, dtype=torch.float32
    )


def _pi_float_step(seq_len, d, train_len):
    # arange(0, L, L / T): the number of steps is rounded, T + 1 for T = 49, L = 16
    stop, step = (train_len, train_len / seq_len) if seq_len > train_len else (seq_len, 1.0)
    m = torch.arange(0.0, stop, step, dtype=torch.float64)
    return m[:, None] * (_BASE ** (-torch.arange(0, d, 2, dtype=torch.float64) / d))[None, :]


def _pi_partly_float32(seq_len, d, train_len, *, part):
    m = torch.arange(seq_len, dtype=torch.float32 if part == "positions" else torch.float64)
    if seq_len > train_len:
        m = m * (train_len / seq_len)
    i = torch.arange(0, d, 2, dtype=torch.float32 if part == "frequencies" else torch.float64)
    theta = _BASE ** (-i / d)
    return m.double()[:, None] * theta.double()[None, :]


def _pi_positions_float32(seq_len, d, train_len):
    return _pi_partly_float32(seq_len, d, train_len, part="positions")


def _pi_frequencies_float32(seq_len, d, train_len):
    return _pi_partly_float32(seq_len, d, train_len, part="frequencies")


def _pi_cases():
    return [
        Case("T = 64 beyond the trained 16, d = 8", (64, 8, 16)),
        Case("T = 10 within the trained 16: no change, d = 6", (10, 6, 16)),
        Case("T = 17, one beyond the trained 16, d = 4", (17, 4, 16)),
        Case("T = 16, exactly the trained length, d = 4", (16, 4, 16)),
        Case("T = 49 beyond the trained 16, d = 2", (49, 2, 16)),
        Case("T = 8192 beyond the trained 2048, d = 8", (8192, 8, 2048)),
    ]


q4 = Question(
    "ch03.q4",
    "Position interpolation: long sequences in the trained range",
    reference=interpolated_angles,
    cases=_pi_cases,
    mistakes=[
        Mistake(
            "positions stretched instead of squeezed (m T / L)",
            _pi_inverted,
            "Interpolation brings the positions back into the trained range: multiply by "
            "train_len / seq_len, a factor below 1.",
        ),
        Mistake(
            "positions scaled even when the sequence fits",
            _pi_always,
            "A sequence no longer than train_len keeps its positions: scale only when "
            "seq_len > train_len.",
        ),
        Mistake(
            "no interpolation: plain RoPE angles",
            _pi_extrapolated,
            "Beyond train_len the positions must be squeezed: m' = m * train_len / seq_len.",
        ),
        Mistake(
            "scaled by (L - 1) / (T - 1)",
            _pi_last_aligned,
            "The factor is train_len / seq_len, as the task states, not (train_len - 1) / "
            "(seq_len - 1).",
        ),
        Mistake(
            "positions spread by linspace(0, L, T): the last one lands on L",
            _pi_linspace,
            "linspace(0, train_len, seq_len) puts the last position on train_len, outside the "
            "trained range, with steps of L / (T - 1). The task's m' = m L / T steps by L / T "
            "and ends at L - L / T.",
        ),
        Mistake(
            "frequencies 10000^(-i/d): the 2 left out",
            _pi_exponent_without_two,
            "Pair i (columns 2i and 2i + 1) has theta_i = 10000 ** (-2i / d); with i running "
            "over 0 .. d/2 - 1 the exponent is -2i/d.",
        ),
        Mistake(
            "angles computed in float32",
            _pi_float32,
            "An angle of 2000 radians has a float32 spacing of about 1e-4: compute positions "
            "and frequencies in float64 (torch.arange(..., dtype=torch.float64)).",
        ),
        Mistake(
            "positions computed in float32, cast to float64 afterwards",
            _pi_positions_float32,
            "A cast keeps the float32 rounding: m * L / T in float32 is off by about 1e-7 of "
            "its value. Build the positions as float64 from the start: torch.arange(seq_len, "
            "dtype=torch.float64).",
        ),
        Mistake(
            "frequencies computed in float32, cast to float64 afterwards",
            _pi_frequencies_float32,
            "theta_i = 10000 ** (-2i / d) from a float32 arange (or an int arange divided by d, "
            "which gives float32) is off by about 1e-7 of its value, which a cast keeps. Use "
            "torch.arange(0, d, 2, dtype=torch.float64).",
        ),
        Mistake(
            "positions as arange(0, train_len, train_len / seq_len)",
            _pi_float_step,
            "With a float step, arange rounds the number of steps: for T = 49 and L = 16 it "
            "gives 50 positions. Build the T positions as arange(seq_len) and multiply them "
            "by train_len / seq_len.",
        ),
    ],
    hints=[
        "Positions 0 .. T - 1 as a float64 column, the d/2 frequencies as a row: their product "
        "is the (T, d/2) angle table of plain RoPE.",
        "Only when seq_len > train_len, multiply the positions by train_len / seq_len first.",
    ],
    atol=1e-9,
    rtol=1e-9,
    check_dtype=True,
    kind="implement",
    library_note=(
        "none: tfbook's positional encodings do not interpolate; the chapter cites position "
        "interpolation (Chen et al. 2023) as a remedy for long sequences"
    ),
)


# --------------------------------------------------------------------------- q5


def rope_half(x, base=10000.0):
    """RoPE in the half-split layout: rotate the pair (x[..., i], x[..., i + d/2]) of the token
    at position m by m * theta_i, theta_i = base^(-2i/d)."""
    seq_len, d = x.shape[-2], x.shape[-1]
    m = torch.arange(seq_len, dtype=torch.float64)[:, None]  # (T, 1)
    theta = base ** (-torch.arange(0, d // 2, dtype=torch.float64) * 2 / d)  # (d/2,)
    cos = torch.cos(m * theta).to(x.dtype)  # (T, d/2)
    sin = torch.sin(m * theta).to(x.dtype)
    first, second = x[..., : d // 2], x[..., d // 2 :]  # pair i is (first[i], second[i])
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


def _q5_rotate(x, base=10000.0, *, start=0, direction=1.0, exponent=2, interleaved=False):
    seq_len, d = x.shape[-2], x.shape[-1]
    m = torch.arange(start, start + seq_len, dtype=torch.float64)[:, None]
    theta = base ** (-torch.arange(0, d // 2, dtype=torch.float64) * exponent / d)
    cos = torch.cos(m * theta).to(x.dtype)
    sin = (direction * torch.sin(m * theta)).to(x.dtype)
    if interleaved:  # the chapter's layout
        out = torch.empty_like(x)
        out[..., 0::2] = x[..., 0::2] * cos - x[..., 1::2] * sin
        out[..., 1::2] = x[..., 0::2] * sin + x[..., 1::2] * cos
        return out
    first, second = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


def _q5_interleaved(x, base=10000.0):
    return _q5_rotate(x, base, interleaved=True)


def _q5_backwards(x, base=10000.0):
    return _q5_rotate(x, base, direction=-1.0)


def _q5_from_one(x, base=10000.0):
    return _q5_rotate(x, base, start=1)


def _q5_exponent_i_over_d(x, base=10000.0):
    return _q5_rotate(x, base, exponent=1)


def _q5_base_ignored(x, base=10000.0):
    return _q5_rotate(x)


def _q5_repeat_interleave(x, base=10000.0):
    """cos and sin widened to d columns with repeat_interleave, as for the interleaved layout,
    then used with rotate_half."""
    seq_len, d = x.shape[-2], x.shape[-1]
    m = torch.arange(seq_len, dtype=torch.float64)[:, None]
    theta = base ** (-torch.arange(0, d // 2, dtype=torch.float64) * 2 / d)
    cos = torch.cos(m * theta).repeat_interleave(2, dim=-1).to(x.dtype)  # (T, d)
    sin = torch.sin(m * theta).repeat_interleave(2, dim=-1).to(x.dtype)
    rotated = torch.cat([-x[..., d // 2 :], x[..., : d // 2]], dim=-1)
    return x * cos + rotated * sin


def _q5_cases():
    gen = torch.Generator().manual_seed(9)
    return [
        Case("random (2, 5, 8), base 10000", (torch.randn(2, 5, 8, generator=gen), 10000.0)),
        Case(
            "base not given (its default is 10000), (3, 2, 7, 4)",
            (torch.randn(3, 2, 7, 4, generator=gen),),
        ),
        Case(
            "base = 500000 given by name (LLaMA 3), (1, 9, 12)",
            (torch.randn(1, 9, 12, generator=gen),),
            {"base": 500000.0},
        ),
        Case("one token (position 0 is not rotated)", (torch.randn(1, 1, 6, generator=gen),)),
        Case("d = 2, 60 positions", (torch.randn(1, 60, 2, generator=gen), 10000.0)),
        Case(
            "entries in the hundreds, base = 100",
            (300.0 * torch.randn(2, 4, 6, generator=gen), 100.0),
        ),
        # the task asks for the dtype of x: float64 in, float64 out (the dtype is checked)
        Case(
            "float64 (2, 6, 4)",
            (torch.randn(2, 6, 4, generator=gen, dtype=torch.float64), 10000.0),
        ),
    ]


def _library_rope_half(x, base=10000.0):
    """The library's interleaved RoPE on the features reordered: feature i of the half layout
    goes to column 2i, feature i + d/2 to column 2i + 1, and back afterwards."""
    d = x.shape[-1]
    interleaved = torch.stack([x[..., : d // 2], x[..., d // 2 :]], dim=-1).flatten(-2)
    y = apply_rotary(interleaved, base=base)
    return torch.cat([y[..., 0::2], y[..., 1::2]], dim=-1)


q5 = Question(
    "ch03.q5",
    "RoPE in the half-split layout",
    reference=rope_half,
    cases=_q5_cases,
    mistakes=[
        Mistake(
            "pairs (2i, 2i+1): the chapter's layout, not the half-split one",
            _q5_interleaved,
            "Here dimension i is paired with dimension i + d/2 (the first half with the second "
            "half), not with its neighbour.",
        ),
        Mistake(
            "rotation in the wrong direction",
            _q5_backwards,
            "Rotate counter-clockwise: x_i' = x_i cos - x_(i+d/2) sin and "
            "x_(i+d/2)' = x_i sin + x_(i+d/2) cos; a sign error in rotate_half turns it round.",
        ),
        Mistake(
            "positions counted from 1",
            _q5_from_one,
            "The first token is at position 0 and is not rotated at all.",
        ),
        Mistake(
            "theta_i = base^(-i/d): the 2 in the exponent lost",
            _q5_exponent_i_over_d,
            "theta_i = base^(-2i/d) for i = 0, ..., d/2 - 1: the exponents run from 0 towards 1, "
            "not towards 1/2.",
        ),
        Mistake(
            "base ignored (always 10000)",
            _q5_base_ignored,
            "Use the base argument in theta_i = base^(-2i/d); its default is 10000.",
        ),
        Mistake(
            "cos and sin widened with repeat_interleave (the interleaved layout's columns)",
            _q5_repeat_interleave,
            "In the half-split layout column j and column j + d/2 share the angle of pair j: "
            "widen the (T, d/2) tables with torch.cat([c, c], dim=-1), not repeat_interleave.",
        ),
    ],
    hints=[
        "Compute the angles m * theta_i as a (T, d/2) table in float64, then cos and sin in "
        "x's dtype; they broadcast against x[..., :d/2] of shape (..., T, d/2).",
        "With first = x[..., :d/2] and second = x[..., d/2:], the result is the concatenation "
        "of first cos - second sin and first sin + second cos, along the last axis.",
    ],
    atol=1e-5,
    rtol=1e-5,
    check_dtype=True,  # "a new tensor of the same shape and dtype"
    kind="implement",
    library=_library_rope_half,
    forbidden=("tfbook.positional.apply_rotary",),
)


# --------------------------------------------------------------------------- q6: predict

#: The four encodings of exercise 3.6, and the panel (A to D) of ``position_maps()`` showing
#: the score between every pair of positions under each.
ENCODINGS = ("sinusoidal", "rotary", "learned", "raw index")
MAP_POSITIONS, MAP_WIDTH = 32, 64


def position_maps():
    """The four panels of exercise 3.6: letter -> (T, T) float64 matrix, T = 32, d = 64.

    Entry (m, n) compares position m with position n under one of the four encodings: the dot
    product of two sinusoidal encodings, the RoPE score of a fixed query at m with a fixed key
    at n, the dot product of two rows of a freshly initialised learned table, and the product
    of the raw indices m * n.
    """
    t, d = MAP_POSITIONS, MAP_WIDTH
    g = torch.Generator().manual_seed(36)
    learned = torch.randn(t, d, generator=g, dtype=torch.float64)  # nn.Embedding's N(0, 1)
    q = torch.randn(d, generator=g, dtype=torch.float64).expand(t, d)  # one query, every place
    k = torch.randn(d, generator=g, dtype=torch.float64).expand(t, d)
    pe = sinusoidal_encoding(t, d, dtype=torch.float64)
    index = torch.arange(t, dtype=torch.float64)
    return {
        "A": apply_rotary(q) @ apply_rotary(k).T,  # rotary
        "B": learned @ learned.T,  # learned (at initialisation)
        "C": index[:, None] * index[None, :],  # raw index
        "D": pe @ pe.T,  # sinusoidal
    }


def _reference_which_map(encoding):
    """The panel of ``position_maps()`` that shows ``encoding``."""
    # sinusoidal: symmetric, the same along every diagonal (depends on |m - n| only), largest
    # on the diagonal; rotary: the same along every diagonal but not symmetric (m - n, with
    # its sign); learned at initialisation: a bright diagonal (|P_m|^2 ~ d) on noise; raw
    # index: grows towards the far corner.
    return {"rotary": "A", "learned": "B", "raw index": "C", "sinusoidal": "D"}[encoding]


def _which_map_swapped(pairs):
    def wrong(encoding):
        answer = _reference_which_map(encoding)
        for a, b in pairs:
            if encoding == a:
                return _reference_which_map(b)
            if encoding == b:
                return _reference_which_map(a)
        return answer

    return wrong


_map_sin_rotary = _which_map_swapped([("sinusoidal", "rotary")])
_map_sin_learned = _which_map_swapped([("sinusoidal", "learned")])
_map_rotary_learned = _which_map_swapped([("rotary", "learned")])


def _classify_map(matrix):
    """Which encoding a (T, T) map shows, read off its structure and the library's table."""
    t = matrix.shape[0]
    index = torch.arange(t, dtype=torch.float64)
    pe = sinusoidal_encoding(t, MAP_WIDTH, dtype=torch.float64)
    diagonals_constant = all(
        torch.allclose(matrix.diagonal(o), matrix.diagonal(o)[:1].expand(t - abs(o)))
        for o in range(-t + 1, t)
    )
    if torch.allclose(matrix, pe @ pe.T):
        return "sinusoidal"
    if torch.allclose(matrix, index[:, None] * index[None, :]):
        return "raw index"
    if diagonals_constant and not torch.allclose(matrix, matrix.T):
        return "rotary"
    return "learned" if torch.allclose(matrix, matrix.T) else "unknown"


def _library_which_map(encoding):
    found = {_classify_map(m): letter for letter, m in position_maps().items()}
    return found[encoding]


q6 = Question(
    "ch03.q6",
    "Predict which heat map is which encoding",
    reference=_reference_which_map,
    cases=lambda: [Case(encoding, (encoding,)) for encoding in ENCODINGS],
    mistakes=[
        Mistake(
            "the sinusoid and RoPE swapped",
            _map_sin_rotary,
            "Both depend on the distance only, so both are constant along every diagonal. The "
            "sinusoid's dot product is symmetric (it cannot tell m - n from n - m) and peaks at "
            "d_model/2 on the diagonal; the RoPE score is not symmetric.",
        ),
        Mistake(
            "the bright diagonal of the learned table taken for the sinusoid",
            _map_sin_learned,
            "A freshly initialised table is random: its diagonal is bright (|P_m|^2 is about "
            "d_model) but the rest is noise with no pattern along the diagonals. The sinusoid's "
            "map repeats the same values along each diagonal.",
        ),
        Mistake(
            "RoPE and the learned table swapped",
            _map_rotary_learned,
            "RoPE's score depends on m - n only: look for the panel whose stripes run parallel "
            "to the diagonal.",
        ),
    ],
    hints=[
        "Ask of each panel: is it symmetric (entry (m, n) equals (n, m))? Is it the same along "
        "each diagonal (does it depend on m - n only)?",
        "The sinusoid's dot product is a sum of cos((m - n) w_i): symmetric, and d_model/2 on "
        "the diagonal. RoPE's score of a fixed query and key depends on m - n with its sign. "
        "A learned table at initialisation holds random vectors.",
        "Return one of the letters 'A' to 'D' for each of the four encodings (a dictionary "
        "look-up is fine).",
    ],
    kind="predict",
    library=_library_which_map,
)


# --------------------------------------------------------------------------- q7: debugging


def _reference_rope_scores(q, k):
    """RoPE scores of the last T_q positions (queries) against all T_k positions (keys)."""
    t_q, t_k = q.shape[-2], k.shape[-2]
    query_positions = torch.arange(t_k - t_q, t_k)  # the queries sit at the end of the sequence
    q_turned = apply_rotary(q, query_positions)
    k_turned = apply_rotary(k)  # keys at positions 0 .. T_k - 1
    return q_turned @ k_turned.transpose(-2, -1)  # (..., T_q, T_k)


def _rope_scores_listing(q, k):
    return apply_rotary(q) @ apply_rotary(k).transpose(-2, -1)


def _rope_scores_off_by_one(q, k):
    t_q, t_k = q.shape[-2], k.shape[-2]
    q_rot = apply_rotary(q, torch.arange(t_k - t_q + 1, t_k + 1))
    return q_rot @ apply_rotary(k).transpose(-2, -1)


def _rope_scores_all_at_last(q, k):
    t_q, t_k = q.shape[-2], k.shape[-2]
    q_rot = apply_rotary(q, torch.full((t_q,), t_k - 1))
    return q_rot @ apply_rotary(k).transpose(-2, -1)


def _rope_scores_keys_unrotated(q, k):
    t_q, t_k = q.shape[-2], k.shape[-2]
    return apply_rotary(q, torch.arange(t_k - t_q, t_k)) @ k.transpose(-2, -1)


def _rope_scores_scaled(q, k):
    return _reference_rope_scores(q, k) / math.sqrt(q.shape[-1])


def _rope_scores_cases():
    gen = torch.Generator().manual_seed(37)
    return [
        Case(
            "the last 3 of 7 positions",
            (torch.randn(2, 3, 8, generator=gen), torch.randn(2, 7, 8, generator=gen)),
        ),
        Case(
            "heads: the last 4 of 9 positions",
            (torch.randn(1, 2, 4, 6, generator=gen), torch.randn(1, 2, 9, 6, generator=gen)),
        ),
        Case(
            "one new token after 5",
            (torch.randn(2, 1, 8, generator=gen), torch.randn(2, 6, 8, generator=gen)),
        ),
        Case(
            "edge: queries at every position (T_q = T_k)",
            (torch.randn(1, 5, 4, generator=gen), torch.randn(1, 5, 4, generator=gen)),
        ),
    ]


def _library_rope_scores(q, k):
    """Rotate a full-length query tensor with apply_rotary's default positions, keep the end."""
    t_q, t_k = q.shape[-2], k.shape[-2]
    full = torch.cat([q.new_zeros(*q.shape[:-2], t_k - t_q, q.shape[-1]), q], dim=-2)
    return apply_rotary(full)[..., t_k - t_q :, :] @ apply_rotary(k).transpose(-2, -1)


q7 = Question(
    "ch03.q7",
    "Fix RoPE for queries at the end of a sequence",
    reference=_reference_rope_scores,
    cases=_rope_scores_cases,
    mistakes=[
        Mistake(
            "the listing unchanged: the queries rotated as positions 0 .. T_q - 1",
            _rope_scores_listing,
            "apply_rotary(q) numbers the rows of q from 0, but these queries are the last T_q "
            "positions of the sequence. Pass their true positions as the second argument.",
        ),
        Mistake(
            "query positions off by one (T_k - T_q + 1 .. T_k)",
            _rope_scores_off_by_one,
            "The keys occupy positions 0 .. T_k - 1, so the last query is at T_k - 1 and the "
            "first of the T_q queries at T_k - T_q.",
        ),
        Mistake(
            "every query rotated to the last position",
            _rope_scores_all_at_last,
            "Only one new token sits at T_k - 1; with T_q queries they occupy T_k - T_q, ..., "
            "T_k - 1, one position each.",
        ),
        Mistake(
            "the keys not rotated",
            _rope_scores_keys_unrotated,
            "RoPE rotates both queries and keys; the score then depends on the difference of "
            "their positions only.",
        ),
        Mistake(
            "scores divided by sqrt(d)",
            _rope_scores_scaled,
            "The task asks for the raw scores (the rotated dot products); attention's scaling "
            "comes later, in chapter 4.",
        ),
    ],
    hints=[
        "Try the listing with one query (T_q = 1), the newest token: which position does "
        "apply_rotary give it, and which should it have?",
        "apply_rotary(x, positions) takes the position of every row of x as a tensor of length T.",
        "The keys fill positions 0 .. T_k - 1 and the queries are the last T_q of them; only "
        "the queries' positions need changing.",
    ],
    atol=1e-5,
    kind="debug",
    library=_library_rope_scores,
)


# --------------------------------------------------------------------------- q8: build


def stretch_positions(weight, new_len=None):
    """A LearnedPositionalEmbedding of new_len rows (default: twice as many) read off the
    trained (L, d_model) table ``weight`` by linear interpolation, first and last rows kept.

    Row r is the old table at the fractional position x = r (L - 1) / (new_len - 1) (x = 0
    when new_len = 1): (1 - f) P[floor x] + f P[floor x + 1], f = x - floor x.
    """
    old_len, d_model = weight.shape
    new_len = 2 * old_len if new_len is None else new_len
    x = torch.arange(new_len, dtype=torch.float64) * (old_len - 1) / max(new_len - 1, 1)
    below = x.floor().long().clamp(max=old_len - 1)  # (new_len,)
    above = (below + 1).clamp(max=old_len - 1)
    f = (x - below)[:, None]  # (new_len, 1)
    table = weight.to(torch.float64)
    rows = (1 - f) * table[below] + f * table[above]  # (new_len, d_model)
    stretched = LearnedPositionalEmbedding(new_len, d_model)
    with torch.no_grad():
        stretched.table.weight.copy_(rows)  # cast to the module's float32
    return stretched


def _stretch(weight, new_len, *, position, mode="linear", tail=False):
    old_len, d_model = weight.shape
    new_len = 2 * old_len if new_len is None else new_len
    table = weight.to(torch.float64)
    if tail:  # old rows kept in place, the new ones copied from the last
        index = torch.arange(new_len).clamp(max=old_len - 1)
        rows = table[index]
    else:
        x = position(torch.arange(new_len, dtype=torch.float64), old_len, new_len)
        x = x.clamp(0, old_len - 1)
        if mode == "nearest":
            rows = table[x.round().long()]
        elif mode == "floor":
            rows = table[x.floor().long()]
        else:
            below = x.floor().long().clamp(max=old_len - 1)
            above = (below + 1).clamp(max=old_len - 1)
            f = (x - below)[:, None]
            if mode == "swapped":
                f = 1 - f
            rows = (1 - f) * table[below] + f * table[above]
    stretched = LearnedPositionalEmbedding(new_len, d_model)
    with torch.no_grad():
        stretched.table.weight.copy_(rows)
    return stretched


def _corners(r, old_len, new_len):
    return r * (old_len - 1) / max(new_len - 1, 1)


def _half_pixel(r, old_len, new_len):
    return (r + 0.5) * old_len / new_len - 0.5


def _squeezed(r, old_len, new_len):
    return r * old_len / new_len


def _stretch_half_pixel(weight, new_len=None):
    return _stretch(weight, new_len, position=_half_pixel)


def _stretch_squeezed(weight, new_len=None):
    return _stretch(weight, new_len, position=_squeezed)


def _stretch_nearest(weight, new_len=None):
    return _stretch(weight, new_len, position=_corners, mode="nearest")


def _stretch_floor(weight, new_len=None):
    return _stretch(weight, new_len, position=_corners, mode="floor")


def _stretch_swapped(weight, new_len=None):
    return _stretch(weight, new_len, position=_corners, mode="swapped")


def _stretch_copy_last(weight, new_len=None):
    return _stretch(weight, new_len, position=_corners, tail=True)


def _stretch_frozen(weight, new_len=None):
    stretched = stretch_positions(weight, new_len)
    stretched.table.weight.requires_grad_(False)
    return stretched


def _compare_stretched(expected, got) -> str | None:
    if not isinstance(got, LearnedPositionalEmbedding):
        return (
            "expected a tfbook.positional.LearnedPositionalEmbedding, got "
            f"{type(got).__name__}: build one and fill its table"
        )
    if got.max_len != expected.max_len or got.d_model != expected.d_model:
        return (
            f"expected max_len={expected.max_len}, d_model={expected.d_model}; got "
            f"max_len={got.max_len}, d_model={got.d_model}"
        )
    if got.table.weight.requires_grad != expected.table.weight.requires_grad:
        return (
            "the table does not require gradients: the stretched positions must go on "
            "training (nn.Embedding.from_pretrained freezes its table unless freeze=False)"
        )
    return compare(
        expected.table.weight.detach(),
        got.table.weight.detach(),
        atol=1e-6,
        rtol=1e-5,
        where="table.weight",
        check_dtype=True,
    )


def _q8_cases():
    gen = torch.Generator().manual_seed(38)

    def trained(rows, d_model, scale=1.0):
        return scale * torch.randn(rows, d_model, generator=gen)

    return [
        Case("L = 4 rows to 10, d_model = 3", (trained(4, 3), 10)),
        Case("L = 5 to 12, d_model = 8", (trained(5, 8), 12)),
        Case("new_len not given (twice as many rows), L = 6, d_model = 4", (trained(6, 4),)),
        Case("shrunk: L = 9 to 4, d_model = 2", (trained(9, 2), 4)),
        Case("same length: L = 7 to 7", (trained(7, 5), 7)),
        Case("one trained row (L = 1) to 5", (trained(1, 3), 5)),
        Case("to one row: L = 6 to 1", (trained(6, 3), 1)),
        Case("large rows (|P| ~ 1e3), L = 3 to 8", (trained(3, 4, 1e3), 8)),
        Case("L = 512 to 4096, d_model = 16", (trained(512, 16), 4096)),
    ]


q8 = Question(
    "ch03.q8",
    "Stretching a trained position table",
    reference=stretch_positions,
    cases=_q8_cases,
    mistakes=[
        Mistake(
            "F.interpolate's default grid (align_corners=False)",
            _stretch_half_pixel,
            "F.interpolate(mode='linear') places row r at (r + 0.5) L / new_len - 0.5, "
            "treating rows as cells; the task keeps the first and last rows where they are: "
            "x = r (L - 1) / (new_len - 1), which is align_corners=True.",
        ),
        Mistake(
            "positions squeezed as r L / new_len",
            _stretch_squeezed,
            "r L / new_len is exercise 3.4's squeeze of positions into the trained range; "
            "here the last new row must land on the last old row: x = r (L - 1) / (new_len - 1).",
        ),
        Mistake(
            "nearest row instead of a linear mix",
            _stretch_nearest,
            "Between two old rows, mix them: (1 - f) P[floor x] + f P[floor x + 1] with "
            "f = x - floor x, not the closer row alone.",
        ),
        Mistake(
            "row floor(x) only: no mix with the next row",
            _stretch_floor,
            "floor(x) gives the row below; the row above gets the weight f = x - floor x.",
        ),
        Mistake(
            "the two weights swapped",
            _stretch_swapped,
            "The row below weighs 1 - f and the row above f: when x is just past a row, that "
            "row should dominate.",
        ),
        Mistake(
            "old rows kept, new rows copied from the last one",
            _stretch_copy_last,
            "Copying the last row makes every new position look the same; stretching spreads "
            "the L trained rows over the new length so that row new_len - 1 is row L - 1.",
        ),
        Mistake(
            "the new table frozen (requires_grad False)",
            _stretch_frozen,
            "The stretched positions are fine-tuned afterwards: nn.Embedding.from_pretrained "
            "freezes its table unless freeze=False; copy the rows into a new "
            "LearnedPositionalEmbedding instead.",
        ),
    ],
    hints=[
        "Compute the fractional source position x of every new row at once, then the rows "
        "below and above it (clamped to L - 1) and the weight f = x - floor x.",
        "Build LearnedPositionalEmbedding(new_len, d_model) and copy the mixed rows into its "
        "table.weight under torch.no_grad().",
    ],
    compare_fn=_compare_stretched,
    kind="build",
    library_note=("none: tfbook's LearnedPositionalEmbedding has no resize; the answer builds one"),
)


EXERCISES = ExerciseSet.collect(globals(), "Chapter 3 exercises")
progress = EXERCISES.progress
__all__ = [*EXERCISES.names, "EXERCISES", "progress", "position_maps"]
