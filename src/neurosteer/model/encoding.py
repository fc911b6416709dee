"""Formatting prompts as a user would send them, and cutting them into padded batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from neurosteer.util.errors import SettingsError
from neurosteer.util.prompts import Prompt, answer_text, user_text
from neurosteer.util.validation import whole


def has_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def format_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt], *, chat_template: bool = True
) -> list[str]:
    """Each prompt as a user turn with the assistant turn opened, or unchanged.

    The chat template is used when ``chat_template`` is true and the tokenizer has one. A
    :class:`ChatPrompt`'s answer opening is not part of this text (see :func:`encode_prompts`).
    """
    users = [user_text(p) for p in prompts]
    if not (chat_template and has_chat_template(tokenizer)):
        return users
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
        for user in users
    ]


def encode(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *, templated: bool) -> list[list[int]]:
    """Token ids of each text. Templated text already carries its special tokens."""
    encoded = tokenizer(list(texts), add_special_tokens=not templated)["input_ids"]
    return [list(ids) for ids in encoded]


def control_strings(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The texts the tokenizer turns into special (control) tokens, e.g. ``<|im_start|>``."""
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    found = {token.content for token in decoder.values() if getattr(token, "special", False)}
    found.update(getattr(tokenizer, "all_special_tokens", []) or [])
    return sorted(s for s in found if s)


def _as_text(tokenizer: PreTrainedTokenizerBase, text: str, *, add_special_tokens: bool) -> list[int]:
    """Token ids of ``text`` with any control strings in it spelled out as ordinary text."""
    return list(tokenizer(text, add_special_tokens=add_special_tokens, split_special_tokens=True)["input_ids"])


# A private-use character marks where the prompt goes in the formatted template.
_SLOT = "\ue000"


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt], *, chat_template: bool = True
) -> list[list[int]]:
    """Token ids of each prompt as a user would send it.

    A prompt that contains a control string such as ``<|im_start|>`` or ``<|endoftext|>`` is
    tokenized with that string as plain text, so a prompt can never open or close a chat turn
    of its own; the template around it keeps its real control tokens. Prompts without control
    strings are tokenized exactly as the template renders them. A :class:`ChatPrompt`'s answer
    opening follows as the tokens the model would have generated (tokenized on its own, control
    strings as text).
    """
    ids = _encode_users(tokenizer, [user_text(p) for p in prompts], chat_template=chat_template)
    for i, prompt in enumerate(prompts):
        if answer := answer_text(prompt):
            ids[i] = ids[i] + _as_text(tokenizer, answer, add_special_tokens=False)
    return ids


def _encode_users(tokenizer: PreTrainedTokenizerBase, prompts: list[str], *, chat_template: bool) -> list[list[int]]:
    templated = chat_template and has_chat_template(tokenizer)
    texts = format_prompts(tokenizer, prompts, chat_template=chat_template)
    ids = encode(tokenizer, texts, templated=templated)
    controls = control_strings(tokenizer)
    for i, prompt in enumerate(prompts):
        if not any(c in prompt for c in controls):
            continue
        if not templated:
            ids[i] = _as_text(tokenizer, prompt, add_special_tokens=True)
            continue
        slot = format_prompts(tokenizer, [_SLOT], chat_template=True)[0]
        before, found, after = slot.partition(_SLOT)
        if not found:
            raise SettingsError(
                f"prompt {i} contains the control string(s) "
                f"{', '.join(repr(c) for c in controls if c in prompt)}, and this chat template rewrites prompts, "
                "so they cannot be kept as plain text; remove them from the prompt"
            )
        ids[i] = (
            encode(tokenizer, [before], templated=True)[0]
            + _as_text(tokenizer, prompt, add_special_tokens=False)
            + encode(tokenizer, [after], templated=True)[0]
        )
    return ids


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


@dataclass(frozen=True)
class Batch:
    """A padded batch. ``rows`` maps each batch row back to its prompt's position."""

    rows: list[int]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    padding_side: str

    @property
    def position_ids(self) -> torch.Tensor:
        """Positions counted over real tokens only, so padding never shifts them."""
        return (self.attention_mask.cumsum(-1) - 1).clamp(min=0)

    @property
    def last_index(self) -> torch.Tensor:
        """Index of each row's last real token, for either padding side."""
        width = self.attention_mask.shape[1]
        flipped_first = self.attention_mask.flip(-1).argmax(-1)
        return width - 1 - flipped_first

    def to(self, device: torch.device) -> Batch:
        return Batch(self.rows, self.input_ids.to(device), self.attention_mask.to(device), self.padding_side)


def iter_batches(
    token_ids: Sequence[Sequence[int]],
    batch_size: int,
    *,
    pad_id: int,
    padding_side: str = "left",
    sort_by_length: bool = True,
) -> Iterator[Batch]:
    """Padded batches of ``token_ids``; longest first when sorting, to waste little padding.

    The arguments are checked here, at the call, not when the first batch is drawn.
    """
    whole("batch_size", batch_size)
    if padding_side not in ("left", "right"):
        raise SettingsError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    return _padded_batches(token_ids, batch_size, pad_id, padding_side, sort_by_length)


def _padded_batches(
    token_ids: Sequence[Sequence[int]], batch_size: int, pad_id: int, padding_side: str, sort_by_length: bool
) -> Iterator[Batch]:
    order = list(range(len(token_ids)))
    if sort_by_length:
        order.sort(key=lambda i: len(token_ids[i]), reverse=True)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(token_ids[i]) for i in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            seq = torch.as_tensor(token_ids[i], dtype=torch.long)
            span = slice(width - len(seq), width) if padding_side == "left" else slice(0, len(seq))
            ids[r, span] = seq
            mask[r, span] = 1
        yield Batch(rows, ids, mask, padding_side)


def input_device(model: torch.nn.Module) -> torch.device:
    """Where the model expects its input ids (the embedding's device)."""
    return model.get_input_embeddings().weight.device
