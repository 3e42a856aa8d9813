"""Time to 99% on the Korean-number task: our EncoderDecoder against ``torch.nn.Transformer``.

The task and the recipe are the capstone's (:mod:`tfbook.numbers`): numbers from 0 to
99,999,999 written with eight digits, to be read in Korean; 99% greedy exact match on
held-out numbers is the finish line. Two models, the same function:

- ours: :class:`tfbook.model.EncoderDecoder` (chapter 6), pre-LN, learned positions, tied
  embeddings, built with :func:`tfbook.interop.encoder_decoder_from_torch` from the peer's
  ``nn.Transformer`` so that the two start from *the same weights*;
- the peer: ``torch.nn.Transformer`` (``batch_first``, ``norm_first``) with a token
  embedding, a learned position table and an output head tied to the embedding, written the
  same way as ours (the embedding and position weights are copied into ours).

Their logits on a batch agree before training (asserted). Both see the same batches in the
same order (:meth:`tfbook.data.Seq2SeqData.batch_fn` with the run's seed) and the same
optimizer, schedule and clipping as :func:`tfbook.training.train`. To be fair on a machine
whose load changes, the two are trained *in lock-step*: one update of ours, one of the
peer's, and so on, each timed on its own. Every ``--eval-every`` steps each model reads the
same held-out numbers with greedy decoding (ours with its KV cache, the peer by recomputing;
evaluation time is not counted). The script prints the training seconds each needed to reach
99% and their ratio (target: ours / peer <= 1.2); ``--json PATH`` writes the figures.

Run ``python benchmarks/bench_seq2seq.py --help``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path

import torch
from bench_capstone import machine_info  # the same machine record (run from benchmarks/)
from torch import Tensor, nn

from tfbook.data import Seq2SeqData
from tfbook.interop import encoder_decoder_from_torch
from tfbook.model import EncoderDecoder
from tfbook.numbers import NumbersConfig, exact_match, numbers_data, numbers_model_config
from tfbook.objectives import lm_loss, teacher_forcing
from tfbook.training import TrainConfig, lr_multiplier, make_optimizer

TARGET_ACCURACY = 0.99
TARGET_RATIO = 1.2


class TorchTransformerSeq2Seq(nn.Module):
    """``nn.Transformer`` with embeddings, learned positions and a tied output head.

    Shape: src ``(B, S)``, tgt ``(B, T)`` -> logits ``(B, T, V)``.
    """

    def __init__(self, vocab_size: int, d_model: int, n_heads: int, d_ff: int, n_layers: int,
                 max_len: int, pad_id: int) -> None:  # fmt: skip
        super().__init__()
        self.pad_id = pad_id
        self.token = nn.Embedding(vocab_size, d_model)
        self.position = nn.Embedding(max_len, d_model)
        with warnings.catch_warnings():  # the nested-tensor note about norm_first
            warnings.simplefilter("ignore")
            self.transformer = nn.Transformer(
                d_model, n_heads, n_layers, n_layers, d_ff, dropout=0.0,
                batch_first=True, norm_first=True,
            )  # fmt: skip

    def embed(self, ids: Tensor) -> Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)  # (T,)
        return self.token(ids) + self.position(positions)[None]  # (B, T, d_model)

    def encode(self, src: Tensor) -> Tensor:
        pad = src == self.pad_id  # (B, S): True = padding (PyTorch's convention)
        return self.transformer.encoder(self.embed(src), src_key_padding_mask=pad)

    def decode(self, tgt: Tensor, memory: Tensor, src: Tensor) -> Tensor:
        t = tgt.shape[1]
        causal = nn.Transformer.generate_square_subsequent_mask(t, dtype=torch.bool)  # (T, T)
        h = self.transformer.decoder(
            self.embed(tgt), memory, tgt_mask=causal, tgt_is_causal=True,
            memory_key_padding_mask=src == self.pad_id,
        )  # fmt: skip
        return h @ self.token.weight.T  # (B, T, V): tied output head

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        return self.decode(tgt, self.encode(src), src)


def ours_from_peer(peer: TorchTransformerSeq2Seq, cfg: NumbersConfig, vocab: int) -> EncoderDecoder:
    """Our EncoderDecoder with the peer's weights (stacks, embedding, position table)."""
    model_cfg = numbers_model_config(cfg, vocab)
    ours = encoder_decoder_from_torch(
        peer.transformer, vocab_size=vocab, max_len=model_cfg.max_len, positional="learned",
        tie_weights=True, scale_embeddings=False, pad_id=peer.pad_id,
    )  # fmt: skip
    with torch.no_grad():
        ours.src_embed.token.weight.copy_(peer.token.weight)
        ours.src_embed.position.table.weight.copy_(peer.position.weight)
    return ours  # with the fused LayerNorm, as tfbook.numbers trains


def peer_exact_match(
    peer: TorchTransformerSeq2Seq, data: Seq2SeqData, pairs, max_len: int
) -> float:
    """Greedy exact match of the peer (no cache: the decoder re-reads the target so far)."""
    right = 0
    with torch.no_grad():
        for i in range(0, len(pairs), 500):
            chunk = pairs[i : i + 500]
            src = data.encode_source([s for s, _ in chunk])  # (B, S)
            memory = peer.encode(src)
            tgt = torch.full((src.shape[0], 1), data.bos_id, dtype=torch.long)  # (B, 1)
            done = torch.zeros(src.shape[0], dtype=torch.bool)
            for _ in range(max_len):
                new = peer.decode(tgt, memory, src)[:, -1].argmax(-1)  # (B,)
                new = new.masked_fill(done, data.pad_id)
                tgt = torch.cat([tgt, new[:, None]], dim=1)
                done |= new == data.eos_id
                if bool(done.all()):
                    break
            got = data.decode_target(tgt[:, 1:])
            right += sum(g == want for g, (_, want) in zip(got, chunk, strict=True))
    return right / len(pairs)


class Trainer:
    """One model's optimizer, schedule and clock: the steps of :func:`tfbook.training.train`."""

    def __init__(self, model: nn.Module, tcfg: TrainConfig, label_smoothing: float, pad_id: int):
        self.model, self.tcfg = model.train(), tcfg
        self.optimizer = make_optimizer(model, tcfg)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda i: lr_multiplier(tcfg, i + 1)
        )
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.label_smoothing, self.pad_id = label_smoothing, pad_id
        self.seconds, self.losses = 0.0, []

    def step(self, batch: tuple[Tensor, Tensor]) -> None:
        start = time.perf_counter()
        src, tgt = batch
        decoder_inputs, targets = teacher_forcing(tgt, pad_id=self.pad_id)
        loss = lm_loss(self.model(src, decoder_inputs), targets, self.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.tcfg.clip)
        self.optimizer.step()
        self.schedule.step()
        self.seconds += time.perf_counter() - start
        self.losses.append(loss.item())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=NumbersConfig().steps)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    machine = machine_info()
    cfg = NumbersConfig(steps=args.steps, n_test=args.n_test, seed=args.seed,
                        warmup=min(NumbersConfig().warmup, args.steps))  # fmt: skip
    data, _, test_pairs = numbers_data(cfg)
    model_cfg = numbers_model_config(cfg, data.vocab_size)
    torch.manual_seed(cfg.seed)
    peer = TorchTransformerSeq2Seq(
        data.vocab_size, cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.n_layers, model_cfg.max_len,
        data.pad_id,
    )  # fmt: skip
    with torch.no_grad():
        nn.init.normal_(peer.token.weight, std=0.02)
        nn.init.normal_(peer.position.weight, std=0.02)
    ours = ours_from_peer(peer, cfg, data.vocab_size)
    batch_at = data.batch_fn(cfg.batch_size, seed=cfg.seed)
    src, tgt = batch_at(0)
    with torch.no_grad():
        gap = (ours(src, tgt[:, :-1]) - peer(src, tgt[:, :-1])).abs().max().item()
    assert gap < 1e-4, f"the two models do not compute the same function: max |diff| {gap}"

    tcfg = TrainConfig(steps=cfg.steps, lr=cfg.lr, weight_decay=cfg.weight_decay,
                       warmup=cfg.warmup, clip=cfg.clip, seed=cfg.seed, progress=False)  # fmt: skip
    trainers = {
        "ours (tfbook EncoderDecoder)": Trainer(ours, tcfg, cfg.label_smoothing, data.pad_id),
        "torch.nn.Transformer": Trainer(peer, tcfg, cfg.label_smoothing, data.pad_id),
    }
    evaluate = {
        "ours (tfbook EncoderDecoder)": lambda: exact_match(ours, data, test_pairs),
        "torch.nn.Transformer": lambda: peer_exact_match(peer, data, test_pairs, 17),
    }
    print(
        f"time to {TARGET_ACCURACY:.0%} greedy exact match on {len(test_pairs)} held-out numbers: "
        f"d_model={cfg.d_model}, {cfg.n_layers}+{cfg.n_layers} layers, h={cfg.n_heads}, "
        f"d_ff={cfg.d_ff}, batch {cfg.batch_size}, lr {cfg.lr:g}, up to {cfg.steps} steps, "
        f"{torch.get_num_threads()} torch threads; same initial weights (max |logit diff| "
        f"{gap:.1e}), same batches, trained in lock-step"
    )
    torch.manual_seed(cfg.seed)
    reached: dict[str, tuple[int, float] | None] = {name: None for name in trainers}
    curves: dict[str, list[tuple[int, float, float]]] = {name: [] for name in trainers}
    for step in range(1, cfg.steps + 1):
        batch = batch_at(step)
        for name, trainer in trainers.items():
            if reached[name] is None:
                trainer.step(batch)
        if step % args.eval_every == 0 or step == cfg.steps:
            for name, trainer in trainers.items():
                if reached[name] is not None:
                    continue
                trainer.model.eval()
                acc = evaluate[name]()
                trainer.model.train()
                curves[name].append((step, trainer.seconds, acc))
                print(
                    f"  step {step:4d} {name:<30} {trainer.seconds:7.1f} s  exact match {acc:.4f}"
                )
                if acc >= TARGET_ACCURACY:
                    reached[name] = (step, trainer.seconds)
        if all(v is not None for v in reached.values()):
            break

    for name, hit in reached.items():
        where = "not reached" if hit is None else f"step {hit[0]}, {hit[1]:.1f} s of training"
        per_step = trainers[name].seconds / len(trainers[name].losses) * 1e3
        print(f"{name:<30} {TARGET_ACCURACY:.0%} at {where} ({per_step:.0f} ms/step)")
    ours_hit, peer_hit = reached["ours (tfbook EncoderDecoder)"], reached["torch.nn.Transformer"]
    ratio = ours_hit[1] / peer_hit[1] if ours_hit and peer_hit else math.nan
    verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
    print(f"seconds to {TARGET_ACCURACY:.0%}, ours / nn.Transformer: {ratio:.2f} "
          f"(target <= {TARGET_RATIO}: {verdict})")  # fmt: skip
    if args.json is not None:
        results = {
            "machine": machine,
            "config": cfg.to_dict(),
            "n_test": len(test_pairs),
            "eval_every": args.eval_every,
            "torch_threads": torch.get_num_threads(),
            "initial_logit_gap": gap,
            "reached": {
                k: None if v is None else {"step": v[0], "seconds": v[1]}
                for k, v in reached.items()
            },  # fmt: skip
            "curves": {
                k: [{"step": s, "seconds": t, "accuracy": a} for s, t, a in v]
                for k, v in curves.items()
            },  # fmt: skip
            "ratio": ratio,
            "target_ratio": TARGET_RATIO,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0 if ratio <= TARGET_RATIO else 1  # nan (a model never reached 99%) fails too


if __name__ == "__main__":
    raise SystemExit(main())
