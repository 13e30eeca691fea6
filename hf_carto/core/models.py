"""Tiny models built from a config: no download, fast on a CPU, for the demo, tests and benchmarks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import GPT2LMHeadModel

__all__ = ["tiny_gpt2"]


def tiny_gpt2(
    vocab_size: int,
    *,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    n_positions: int = 64,
    eos_token_id: int | None = None,
    seed: int | None = None,
    **config_kwargs: Any,
) -> GPT2LMHeadModel:
    """A freshly initialised ``GPT2LMHeadModel`` built from a ``GPT2Config``.

    Args:
        vocab_size (`int`): the tokenizer's size (`len(tokenizer)`).
        n_layer (`int`, *optional*, defaults to `2`): transformer blocks.
        n_embd (`int`, *optional*, defaults to `64`): hidden size; a multiple of `n_head`.
        n_head (`int`, *optional*, defaults to `4`): attention heads.
        n_positions (`int`, *optional*, defaults to `64`): longest sequence the model accepts.
        eos_token_id (`int`, *optional*): end-of-text id, used as beginning-of-text id too (GPT-2
            has one token for both); generation stops at it. When `None`, the config keeps
            GPT-2's default (50256), which a tiny vocabulary does not contain.
        seed (`int`, *optional*): when given, `transformers.set_seed(seed)` runs first, so the
            initial weights depend only on it. That seeds Python's, numpy's and torch's global
            generators, not only the weights'. When `None`, the current torch state is used.
        config_kwargs: any other `GPT2Config` field (for instance `resid_pdrop=0.0`).

    Returns:
        `transformers.GPT2LMHeadModel`: the model, in training mode (call `.eval()` to score with it).

    Example:
        >>> model = tiny_gpt2(100, n_layer=1, n_embd=8, n_head=2, n_positions=16, eos_token_id=0, seed=0)
        >>> model.config.n_layer, model.config.eos_token_id, model.config.bos_token_id
        (1, 0, 0)
    """
    from transformers import GPT2Config, GPT2LMHeadModel, set_seed

    if eos_token_id is not None:
        config_kwargs.setdefault("bos_token_id", eos_token_id)
        config_kwargs["eos_token_id"] = eos_token_id
    config = GPT2Config(
        vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head, **config_kwargs
    )
    if seed is not None:
        set_seed(seed)
    return GPT2LMHeadModel(config)
