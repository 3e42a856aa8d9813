"""The models run wherever PyTorch runs: no host synchronisation inside a forward.

Two cheap stand-ins for a GPU on a CPU-only machine:

- the ``meta`` device has shapes but no values, so any ``.item()``, ``int(t)`` or
  value-dependent branch in a forward raises there (on a GPU each would wait for the device);
- ``torch.compile(..., backend="eager", fullgraph=True)`` refuses to split a graph, so the same
  code fails with "Could not guard on data-dependent expression".

The readable errors for bad input stay on the CPU in eager mode (the last tests).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tfbook.model import BERT, GPT, EncoderDecoder, TransformerConfig

SMALL = dict(vocab_size=50, d_model=16, n_heads=2, d_ff=32, n_layers=2, max_len=32, pad_id=0)

# The configurations the book builds: the paper's (post-LN, sinusoidal, ReLU), GPT-2's (pre-LN,
# learned, tanh GELU) and BERT's (post-LN, learned, GELU, token types, LayerNorm after embeddings).
CONFIGS = {
    "paper": TransformerConfig(**SMALL),
    "gpt2": TransformerConfig(
        **SMALL,
        norm_first=True,
        positional="learned",
        activation="gelu_tanh",
        scale_embeddings=False,
    ),
    "bert": TransformerConfig(
        **SMALL,
        positional="learned",
        activation="gelu",
        n_token_types=2,
        embed_norm=True,
        scale_embeddings=False,
    ),
}


def _inputs(model: torch.nn.Module, device: str) -> tuple:
    """A batch (B=2, T=6) the model's forward takes, on ``device``."""
    ids = torch.tensor([[1, 5, 7, 9, 3, 2], [4, 8, 2, 0, 0, 0]], device=device)
    if isinstance(model, EncoderDecoder):
        return ids, ids[:, :4]
    if isinstance(model, BERT):
        types = torch.zeros_like(ids) if model.cfg.n_token_types else None
        return ids, types, (ids != 0).long()  # a 0/1 attention_mask, as Hugging Face passes
    return (ids,)


def _loss(out: torch.Tensor) -> torch.Tensor:
    return out.float().pow(2).mean()


CASES = [
    pytest.param(cls, name, id=f"{cls.__name__}-{name}")
    for cls in (GPT, BERT, EncoderDecoder)
    for name in CONFIGS
]


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize(("cls", "config"), CASES)
def test_forward_and_backward_run_on_the_meta_device(cls, config, train) -> None:
    with torch.device("meta"):
        model = cls(CONFIGS[config]).train(train)
    out = model(*_inputs(model, "meta"))
    assert out.device.type == "meta"
    _loss(out).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and g.device.type == "meta" for g in grads)


def test_incremental_decoding_runs_on_the_meta_device() -> None:
    with torch.device("meta"):
        model = GPT(CONFIGS["gpt2"]).eval()
    cache = model.new_cache()
    prompt = torch.zeros(2, 5, dtype=torch.long, device="meta")
    assert model(prompt, cache=cache).shape == (2, 5, 50)
    step = torch.zeros(2, 1, dtype=torch.long, device="meta")
    assert model(step, cache=cache).shape == (2, 1, 50)
    assert len(cache) == 6


@pytest.mark.parametrize(("cls", "config"), CASES)
def test_compiles_into_one_graph_with_the_same_outputs(cls, config) -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = cls(CONFIGS[config]).eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # raises on a graph break
    inputs = _inputs(model, "cpu")
    out = compiled(*inputs)
    torch.testing.assert_close(out, model(*inputs), rtol=0, atol=0)


@pytest.mark.parametrize("cls", [GPT, BERT, EncoderDecoder], ids=lambda c: c.__name__)
def test_a_training_forward_compiles_into_one_graph_and_backpropagates(cls) -> None:
    """A training-mode forward (dropout included) captured whole; its backward runs as usual."""
    torch._dynamo.reset()
    model = cls(CONFIGS["gpt2"]).train()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    loss = _loss(compiled(*_inputs(model, "cpu")))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())


# ----------------------------------------------------------------------- the errors a reader gets


@pytest.mark.parametrize("cls", [GPT, BERT], ids=lambda c: c.__name__)
def test_out_of_range_ids_still_get_a_clear_error_on_the_cpu(cls) -> None:
    model = cls(CONFIGS["bert"] if cls is BERT else CONFIGS["gpt2"])
    with pytest.raises(ValueError, match=r"ids must be token ids in \[0, V=50\), got values"):
        model(torch.tensor([[1, 2, 50]]))


def test_shape_errors_stay_everywhere_even_on_meta() -> None:
    """Shapes are known without values, so the shape checks run on every device."""
    with torch.device("meta"):
        model = GPT(CONFIGS["gpt2"])
    with pytest.raises(ValueError, match=r"ids must have shape \(B, T\)"):
        model(torch.zeros(6, dtype=torch.long, device="meta"))
    with pytest.raises(ValueError, match="max_len=32"):
        model(torch.zeros(1, 33, dtype=torch.long, device="meta"))


def test_value_checks_are_skipped_where_reading_values_would_synchronise() -> None:
    """On meta (as on a GPU) an out-of-range id is not read on the host: no error, no sync."""
    with torch.device("meta"):
        model = GPT(CONFIGS["gpt2"])
    ids = torch.full((1, 3), 99, dtype=torch.long, device="meta")  # 99 >= V: unknowable here
    assert model(ids).shape == (1, 3, 50)


def test_a_bad_0_1_attention_mask_is_still_reported_on_the_cpu() -> None:
    model = BERT(CONFIGS["bert"])
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="attention_mask must hold 0 .padding. and 1"):
        model(ids, attention_mask=torch.tensor([[1, 2, 1]]))


def test_float64_models_compile_too() -> None:
    """The book's float64 reference runs (chapter 6) take the same path."""
    torch._dynamo.reset()
    cfg = dataclasses.replace(CONFIGS["paper"])
    model = EncoderDecoder(cfg).double().eval()
    inputs = _inputs(model, "cpu")
    out = torch.compile(model, backend="eager", fullgraph=True)(*inputs)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, model(*inputs), rtol=0, atol=0)


def test_a_trained_run_loads_onto_the_device_map_location_names() -> None:
    """``load_model(..., map_location=D)`` gives a model on D (here ``meta``, as it would be
    ``cuda``), with its head still tied to the embedding, ready to run there."""
    from tfbook.run import book_run, load_model

    model, tokenizer, _ = load_model(book_run("gpt-char"), map_location="meta")
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert model.head.weight is model.embeddings.token.weight
    ids = torch.zeros(1, 4, dtype=torch.long, device="meta")
    assert model(ids).shape == (1, 4, tokenizer.vocab_size)
