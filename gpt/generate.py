"""Sample text from a pretrained GPT: a prompt, temperature, top-k or top-p (nucleus).

A key/value cache holds every layer's keys and values, so each new token costs
one position of compute instead of the whole prefix.

    python generate.py "대한민국의 수도는" --max_len 64 --top_k 40
"""
from __future__ import annotations

import torch
from torch import Tensor

from common.checkpoint import check_compatible, load_checkpoint
from common.cli import UserError, make_parser, non_negative_int, positive_int, run_main
from common.config import ModelConfig
from common.device import Runtime, setup_runtime
from common.layers import KVCache
from common.paths import DEFAULT_VOCAB, rel
from common.vocab import BOS_ID, EOS_ID, Vocab, load_vocab
from gpt.model import GPTLMHeadModel
from gpt.finetune_spec import SPEC


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


@torch.no_grad()
def generate(model: GPTLMHeadModel, prompt: list[int], max_len: int, temperature: float = 1.0, top_k: int = 40,
             top_p: float = 0.0, use_cache: bool = True, generator: torch.Generator | None = None,
             stop_at_eos: bool = True) -> list[int]:
    """Append up to `max_len` sampled tokens to `prompt` (token ids); returns the new tokens.

    temperature 0 means greedy decoding. use_cache=False recomputes the whole prefix
    at every step (the reference the cache is tested and benchmarked against).
    """
    model.eval()
    device = next(model.parameters()).device
    cfg = model.cfg
    if len(prompt) + max_len > cfg.n_seq:
        raise UserError(f"prompt ({len(prompt)} tokens) + --max_len {max_len} exceeds n_seq={cfg.n_seq}; lower --max_len")
    ids = torch.tensor([prompt], device=device)
    cache = KVCache.empty(cfg, 1, len(prompt) + max_len, device, next(model.parameters()).dtype) if use_cache else None
    new: list[int] = []
    step_input = ids
    for _ in range(max_len):
        logits = model.logits(step_input if use_cache else ids, cache=cache)[:, -1, :].float()
        if temperature == 0:
            token = logits.argmax(-1, keepdim=True)
        else:
            probs = filter_logits(logits / temperature, top_k, top_p).softmax(-1)
            token = torch.multinomial(probs, 1, generator=generator)
        new.append(int(token))
        if stop_at_eos and new[-1] == EOS_ID:
            break
        ids = torch.cat([ids, token], dim=1)
        step_input = token
    return new


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
    parser.add_argument("--model", default=rel(SPEC.folder / "save_pretrain.pth"), help="checkpoint from pretrain.py")
    parser.add_argument("--vocab", default=rel(DEFAULT_VOCAB), help="SentencePiece model")
    parser.add_argument("--max_len", type=positive_int, default=64, help="tokens to generate")
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (0: greedy)")
    parser.add_argument("--top_k", type=non_negative_int, default=40, help="sample among the k most likely tokens (0: off)")
    parser.add_argument("--top_p", type=float, default=0.0, help="nucleus sampling threshold in (0, 1] (0: off); needs --top_k 0")
    parser.add_argument("--samples", type=positive_int, default=1, help="how many continuations")
    parser.add_argument("--seed", type=int, default=42, help="random seed")
    parser.add_argument("--gpu", type=int, default=None, help="GPU index (default: cuda:0 if present, else CPU)")
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
        for _ in range(args.samples):
            new = generate(model, prompt, args.max_len, args.temperature, args.top_k, args.top_p, generator=generator)
            print(vocab.decode(prompt + new))

    run_main(run)


if __name__ == "__main__":
    main()
