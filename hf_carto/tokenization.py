"""Tokenizers trained on the data at hand, so that no run needs to download one."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["EOS_TOKEN", "train_bpe_tokenizer"]

EOS_TOKEN = "<|endoftext|>"


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int):
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for ``transformers``.

    GPT-2's scheme: bytes mapped to printable characters, no prefix space, merges learned up to
    ``vocab_size`` tokens. The only special token is ``<|endoftext|>`` (id 0), which serves as
    end-of-text and padding token. Every byte is in the initial alphabet, so any text encodes.

    Args:
        texts (`Iterable[str]`): the training texts.
        vocab_size (`int`): the vocabulary size to reach; a small corpus may give fewer tokens.

    Returns:
        `transformers.PreTrainedTokenizerFast`.

    Example:
        >>> tokenizer = train_bpe_tokenizer(["the cat sat on the mat"] * 10, vocab_size=300)
        >>> tokenizer.eos_token_id, tokenizer.decode(tokenizer("the mat")["input_ids"])
        (0, 'the mat')
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN)
