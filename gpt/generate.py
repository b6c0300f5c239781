"""Sample text from a pretrained GPT: a prompt (or a batch of them), temperature, top-k or top-p (nucleus).

A key/value cache (`common.layers.KVCache`) holds every layer's keys and values, so
each new token costs one position of compute instead of the whole prefix. For a
small model at batch 1 a decode step costs per-op overhead and reading the weights,
not FLOPs, so the loop is kept lean: the cache is preallocated and written in place,
every step's slot is a tensor made once, sampling runs on the device (the tokens
come back to Python once, at the end), and `--compile` runs the whole step (trunk,
LM head, filter, sample) as one `torch.compile`d graph, the same graph at every
step since the static cache never changes shape.

    python generate.py "대한민국의 수도는" --max_len 64 --top_k 40
"""
from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from common.checkpoint import check_compatible, load_checkpoint
from common.cli import (UserError, add_gpu_option, add_vocab_option, make_parser, non_negative_int, positive_int, rel,
                        run_main)
from common.config import ModelConfig
from common.device import Runtime, setup_runtime
from common.layers import KVCache
from common.vocab import BOS_ID, EOS_ID, PAD_ID, Vocab, load_vocab
from gpt.model import GPTLMHeadModel


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 0.0) -> Tensor:
    """Keep the top_k most likely tokens, or the smallest set whose probability reaches top_p;
    the rest get -inf. logits: (B, V). top_k and top_p are exclusive (0 = off)."""
    if top_k > 0 and top_p > 0:
        raise ValueError("top_k and top_p are exclusive: set one of them to 0")
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[..., -1:]
        return logits.masked_fill(logits < kth, float("-inf"))
    if top_p > 0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        # drop a token when the tokens ranked above it already reach top_p; the first always stays
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        return logits.masked_fill(drop, float("-inf"))
    return logits


def pick(logits: Tensor, temperature: float, top_k: int, top_p: float, noise: Tensor | None) -> Tensor:
    """The next token of each row (B,) from logits (B, V): the argmax at temperature 0, else a sample
    of the filtered softmax. noise: Exponential(1) draws, (B, top_k) with top_k, else (B, V).

    argmax(probs / noise) is a sample of probs (the exponential race): drawn on the device, without
    torch.multinomial, which waits for the GPU. With top_k only the k candidates race.
    """
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k > 0:
        values, candidates = logits.topk(min(top_k, logits.size(-1)), dim=-1)
        return candidates.gather(-1, race(values.softmax(-1), noise)[:, None])[:, 0]
    return race(filter_logits(logits, top_p=top_p).softmax(-1), noise)


def race(probs: Tensor, noise: Tensor) -> Tensor:
    # a draw of exactly 0 would make 0/0 = NaN for a filtered token, and argmax picks NaN
    return (probs / noise.clamp_min(torch.finfo(noise.dtype).tiny)).argmax(-1)


def sampling_noise(batch: int, width: int, temperature: float, generator: torch.Generator | None,
                   device: torch.device, block: int = 32) -> Iterator[Tensor | None]:
    """Each step's noise for `pick`, (batch, width), drawn `block` steps at a time (one call, not one a step)."""
    if temperature == 0:
        yield from itertools.repeat(None)
    buffer = torch.empty(block, batch, width, device=device)
    while True:
        yield from buffer.exponential_(generator=generator)  # views: each used before the next draw


def decode_step(model: GPTLMHeadModel, token: Tensor, slot: Tensor, cache: KVCache, noise: Tensor | None,
                temperature: float, top_k: int, top_p: float) -> Tensor:
    """One token per row (B, 1), written at cache slot `slot` (1,) -> the next token of each row (B,).
    The unit that compile=True compiles: every step has the same shapes, so one graph serves them all."""
    return pick(model.logits(token, cache=cache, slots=slot)[:, -1].float(), temperature, top_k, top_p, noise)


def module_structure_guards_off(guards: list) -> list[bool]:
    """torch.compile guard filter: skip the checks that the model's submodules keep their classes
    and methods (a few hundred per call, a tenth of a small model's step at batch 1); the checks on
    every tensor (each parameter's shape and dtype, the cache's, the inputs') and on constants stay."""
    return [not (g.name.startswith("L['model']") and g.guard_type in ("TYPE_MATCH", "DICT_CONTAINS")) for g in guards]


@functools.cache
def compiled_decode_step() -> Callable[..., Tensor]:
    # dynamic=False: the static cache never changes shape, so nothing needs to be symbolic;
    # a new batch size or cache length compiles once more
    return torch.compile(decode_step, fullgraph=True, dynamic=False,
                         options={"guard_filter_fn": module_structure_guards_off})


def cache_dtype(model: nn.Module, device: torch.device) -> torch.dtype:
    """The dtype the layers' keys/values come in: the autocast dtype where autocast is on (bf16 on CUDA)."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return next(model.parameters()).dtype


@torch.no_grad()
def generate_batch(model: GPTLMHeadModel, prompts: list[list[int]], max_len: int, temperature: float = 1.0,
                   top_k: int = 40, top_p: float = 0.0, use_cache: bool = True, generator: torch.Generator | None = None,
                   stop_at_eos: bool = True, compile: bool = False) -> list[list[int]]:
    """Append up to `max_len` sampled tokens to each prompt (token ids); returns each row's new tokens,
    up to and including its first [EOS] when stop_at_eos.

    temperature 0 means greedy decoding. Prompts may differ in length: the cache holds them left-padded
    and each row's positions count from its own first token, so a row gets the tokens it would get alone.
    use_cache=False is the reference the cache is tested and benchmarked against: at every step each
    row's whole prefix is recomputed by the plain forward (no cache, no padding). Both paths draw the
    same sampling noise, so with the same generator seed they sample the same tokens.
    compile=True runs the cached decode step `torch.compile`d (the first call of a batch size and
    length compiles it: about 10 s on a 2-core CPU).
    """
    if not prompts or not all(prompts):
        raise ValueError("every prompt needs at least one token (e.g. [BOS])")
    if top_k > 0 and top_p > 0:
        raise ValueError("top_k and top_p are exclusive: set one of them to 0")
    if max_len <= 0:
        return [[] for _ in prompts]
    model.eval()
    device = next(model.parameters()).device
    cfg = model.cfg
    longest = max(map(len, prompts))
    if longest + max_len > cfg.n_seq:
        raise UserError(f"prompt ({longest} tokens) + --max_len {max_len} exceeds n_seq={cfg.n_seq}; lower --max_len")
    B = len(prompts)
    # the same noise, in the same order, on both paths
    noise = sampling_noise(B, min(top_k, cfg.n_vocab) if top_k > 0 else cfg.n_vocab, temperature, generator, device)

    if use_cache:
        pads = torch.tensor([longest - len(p) for p in prompts], device=device)
        cache = KVCache.empty(cfg, pads, longest + max_len, cache_dtype(model, device))
        slots = torch.arange(longest + max_len, device=device)  # every step's slot, made once
        step = compiled_decode_step() if compile else decode_step
        ids = torch.tensor([[PAD_ID] * (longest - len(p)) + p for p in prompts], device=device)
        logits = model.logits(ids, cache=cache, slots=slots[:longest])[:, -1]  # the prompts, in one pass
    else:
        rows = [torch.tensor([p], device=device) for p in prompts]
        logits = torch.cat([model.logits(r)[:, -1] for r in rows])
    token = pick(logits.float(), temperature, top_k, top_p, next(noise))
    out = torch.empty(B, max_len, dtype=torch.long, device=device)  # the tokens stay on the device until the end
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    check_every = 1 if device.type == "cpu" else 16  # bool(finished.all()) waits for a GPU's queue
    for t in range(max_len):
        out[:, t] = token
        if stop_at_eos:
            finished |= token == EOS_ID
            if (t + 1) % check_every == 0 and bool(finished.all()):
                break
        if t + 1 == max_len:
            break
        if use_cache:
            token = step(model, token[:, None], slots[longest + t : longest + t + 1], cache, next(noise),
                         temperature, top_k, top_p)
        else:
            rows = [torch.cat([r, token[i, None, None]], dim=1) for i, r in enumerate(rows)]
            logits = torch.cat([model.logits(r)[:, -1] for r in rows])
            token = pick(logits.float(), temperature, top_k, top_p, next(noise))
    new = out[:, : t + 1].tolist()
    if stop_at_eos:
        new = [row[: row.index(EOS_ID) + 1] if EOS_ID in row else row for row in new]
    return new


def generate(model: GPTLMHeadModel, prompt: list[int], max_len: int, temperature: float = 1.0, top_k: int = 40,
             top_p: float = 0.0, use_cache: bool = True, generator: torch.Generator | None = None,
             stop_at_eos: bool = True, compile: bool = False) -> list[int]:
    """Append up to `max_len` sampled tokens to `prompt` (token ids); returns the new tokens.
    One row of `generate_batch`, whose docstring says what the options do."""
    return generate_batch(model, [prompt], max_len, temperature, top_k, top_p, use_cache, generator, stop_at_eos,
                          compile)[0]


def load_lm(path: str, vocab: Vocab, vocab_path: str, runtime: Runtime) -> GPTLMHeadModel:
    state = load_checkpoint(path)
    if not str(state.get("kind", "")).startswith("gpt-"):
        raise UserError(f"{path} is not a GPT checkpoint (it is {state.get('kind')!r}); pass gpt's save_pretrain.pth")
    cfg = ModelConfig(**state["config"])
    check_compatible(state, path, cfg.to_dict(), vocab.fingerprint, vocab_path)  # the same vocab, or refused
    model = GPTLMHeadModel(cfg)
    weights = {k: v for k, v in state["model"].items() if k.startswith(("trunk.", "lm_head."))}
    model.load_state_dict(weights, strict=True)
    return model.to(runtime.device)


def main() -> None:
    parser = make_parser("Sample text from a pretrained GPT (key/value-cached decoding).")
    parser.add_argument("prompt", help="text to continue")
    parser.add_argument("--model", default=rel(Path(__file__).resolve().parent / "save_pretrain.pth"),
                        help="checkpoint from pretrain.py")
    add_vocab_option(parser)
    parser.add_argument("--max_len", type=positive_int, default=64, help="tokens to generate")
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (0: greedy)")
    parser.add_argument("--top_k", type=non_negative_int, default=40, help="sample among the k most likely tokens (0: off)")
    parser.add_argument("--top_p", type=float, default=0.0, help="nucleus sampling threshold in (0, 1] (0: off); needs --top_k 0")
    parser.add_argument("--samples", type=positive_int, default=1, help="how many continuations (sampled as one batch)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the decode step: it compiles first (about 10 s on a 2-core CPU), "
                             "then decodes faster")
    parser.add_argument("--seed", type=int, default=42, help="random seed")
    add_gpu_option(parser)
    args = parser.parse_args()

    def run() -> None:
        if args.top_k > 0 and args.top_p > 0:
            raise UserError(f"--top_k {args.top_k} and --top_p {args.top_p} are exclusive: pass --top_k 0 to use --top_p")
        if not 0 <= args.top_p <= 1:
            raise UserError(f"--top_p must be in [0, 1], got {args.top_p}")
        if args.temperature < 0:
            raise UserError(f"--temperature must be >= 0, got {args.temperature}")
        runtime = setup_runtime(args.gpu)
        vocab = load_vocab(args.vocab)
        model = load_lm(args.model, vocab, args.vocab, runtime)
        generator = torch.Generator(device=runtime.device).manual_seed(args.seed)
        prompt = [BOS_ID, *vocab.encode(args.prompt)]
        for new in generate_batch(model, [prompt] * args.samples, args.max_len, args.temperature, args.top_k,
                                  args.top_p, generator=generator, compile=args.compile):
            print(vocab.decode(prompt + new))

    run_main(run)


if __name__ == "__main__":
    main()
