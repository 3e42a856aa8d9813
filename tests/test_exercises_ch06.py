"""Chapter 6's exercise references are second copies of library code: prove them equal.

``tests/test_exercise_library.py`` compares q1, q2, q3 and q5 with their ``library``
counterparts case by case. The two references whose counterpart is a measurement on a whole
model rather than a function are checked here: the attention-matrix count (q4) against forward
hooks on ``EncoderDecoder``, and the reach of a mask (q6) by perturbing stacks of
``EncoderLayer``.
"""

from __future__ import annotations

import torch

from tfbook.attention import CrossAttention, SelfAttention
from tfbook.exercises import ch06
from tfbook.model import EncoderDecoder, EncoderLayer, TransformerConfig


def test_attention_maps_reference_counts_what_encoder_decoder_computes():
    n_layers, n_heads, src_len, tgt_len = 2, 4, 5, 3
    cfg = TransformerConfig(
        vocab_size=11, d_model=16, n_heads=n_heads, d_ff=32, n_layers=n_layers, dropout=0.0
    )
    model = EncoderDecoder(cfg).eval()
    seen = []

    def record(module, args, output):  # one call = one (T_q, T_k) weight matrix per head
        t_q = args[0].shape[1]
        t_k = args[1].shape[1] if isinstance(module, CrossAttention) else t_q
        seen.append(module.n_heads * t_q * t_k)

    for module in model.modules():
        if isinstance(module, (SelfAttention, CrossAttention)):
            module.register_forward_hook(record)
    with torch.no_grad():
        model(torch.randint(1, 11, (1, src_len)), torch.randint(1, 11, (1, tgt_len)))
    matrices = sum(n_heads for _ in seen)
    assert ch06._reference_attention_maps(n_layers, n_heads, src_len, tgt_len) == (
        matrices,
        sum(seen),
    )


def test_reachable_reference_is_what_a_stack_of_encoder_layers_lets_through():
    """Perturb each input position of a float64 stack of pre-LN EncoderLayers sharing one
    mask; the outputs that move are exactly the reference's reach (q6)."""
    i = torch.arange(10)
    strided = (i[None, :] <= i[:, None]) & ((i[:, None] - i[None, :]) % 3 == 0)
    for mask, n_layers in [
        (ch06._window_mask(8, 3), 2),
        (ch06._window_mask(9, 2), 3),
        (strided, 2),
        (torch.ones(5, 5, dtype=torch.bool), 1),
    ]:
        t = mask.shape[0]
        torch.manual_seed(n_layers)
        layers = [EncoderLayer(8, 2, 16, norm_first=True).double().eval() for _ in range(n_layers)]
        x = torch.randn(1, t, 8, dtype=torch.float64)

        def run(h, layers=layers, mask=mask):
            for layer in layers:
                h = layer(h, mask)
            return h

        moved = torch.zeros(t, t, dtype=torch.bool)
        with torch.no_grad():
            base = run(x)
            for j in range(t):
                bumped = x.clone()
                bumped[0, j] += torch.randn(8, dtype=torch.float64)
                moved[:, j] = (run(bumped) - base).abs().amax(dim=-1)[0] > 1e-12
        assert torch.equal(moved, ch06._reference_reachable(mask, n_layers)), (mask, n_layers)
