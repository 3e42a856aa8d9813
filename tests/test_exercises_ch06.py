"""Chapter 6's exercise references are second copies of library code: prove them equal.

``tests/test_exercise_library.py`` compares q1, q2, q3 and q5 with their ``library``
counterparts case by case. The two references whose counterpart is a measurement on a whole
model rather than a function are checked here: the attention-matrix count (q4) against forward
hooks on ``EncoderDecoder``, and the perturbation test (q6) on ``GPT`` and ``BERT``.
"""

from __future__ import annotations

import torch

from tfbook.attention import CrossAttention, SelfAttention
from tfbook.exercises import ch06
from tfbook.model import (
    BERT,
    GPT,
    EncoderDecoder,
    TransformerConfig,
)


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


def test_changed_outputs_reference_on_the_library_families():
    cfg = TransformerConfig(
        vocab_size=12, d_model=16, n_heads=4, d_ff=32, n_layers=2, dropout=0.0, norm_first=True
    )
    torch.manual_seed(2)
    gpt, bert = GPT(cfg).eval(), BERT(cfg).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        causal = ch06._reference_changed_outputs(gpt, ids, 2, 11)
        bidirectional = ch06._reference_changed_outputs(bert, ids, 2, 11)
    assert causal.tolist() == [False, False, True, True, True, True]
    assert bidirectional.all()
