"""Installing and removing forward hooks safely.

Every hook neurosteer installs goes through :func:`installed_hooks`, which removes the handles
in ``finally``: after the block the model computes exactly what it computed before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

PreHook = Callable[[nn.Module, tuple[Any, ...]], Any]
PostHook = Callable[[nn.Module, tuple[Any, ...], Any], Any]


@dataclass(frozen=True)
class Hooks:
    """Hooks to install together: forward pre-hooks, forward hooks, and pre-hooks that also receive
    (and may replace) the module's keyword arguments. ``a + b`` installs both."""

    pre: tuple[tuple[nn.Module, PreHook], ...] = ()
    post: tuple[tuple[nn.Module, PostHook], ...] = ()
    pre_with_kwargs: tuple[tuple[nn.Module, Callable[..., Any]], ...] = ()
    contexts: tuple[Callable[[], AbstractContextManager], ...] = ()
    """Context managers entered with the hooks, for what a hook cannot reach (a mixture-of-experts
    layer's experts, whose neurons exist inside one module's forward)."""

    def __add__(self, other: Hooks) -> Hooks:
        return Hooks(
            self.pre + other.pre,
            self.post + other.post,
            self.pre_with_kwargs + other.pre_with_kwargs,
            self.contexts + other.contexts,
        )

    @staticmethod
    def join(parts: Sequence[Hooks]) -> Hooks:
        joined = Hooks()
        for part in parts:
            joined = joined + part
        return joined


@contextmanager
def installed(hooks: Hooks | Sequence[Hooks]) -> Iterator[None]:
    """Install ``hooks`` (one :class:`Hooks` or several) for the duration of the block."""
    joined = hooks if isinstance(hooks, Hooks) else Hooks.join(hooks)
    with installed_hooks(joined.pre, joined.post, joined.pre_with_kwargs), ExitStack() as stack:
        for context in joined.contexts:
            stack.enter_context(context())
        yield


@contextmanager
def installed_hooks(
    pre: Sequence[tuple[nn.Module, PreHook]] = (),
    post: Sequence[tuple[nn.Module, PostHook]] = (),
    pre_with_kwargs: Sequence[tuple[nn.Module, Callable[..., Any]]] = (),
) -> Iterator[None]:
    """Register forward pre-hooks and hooks for the duration of the block.

    ``pre_with_kwargs`` hooks also receive (and may replace) the module's keyword arguments.
    """
    handles = []
    try:
        for module, fn in pre:
            handles.append(module.register_forward_pre_hook(fn))
        for module, fn in pre_with_kwargs:
            handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
        for module, fn in post:
            handles.append(module.register_forward_hook(fn))
        yield
    finally:
        for handle in handles:
            handle.remove()


class DeviceCache:
    """One tensor, copied lazily to whichever device and dtype a hook's input arrives on.

    Layers of a model dispatched with ``device_map="auto"`` live on different devices, and
    offloaded layers only learn their execution device at forward time, so hooks look the
    tensor up by the input they receive rather than by where they were built.
    """

    def __init__(self, tensor: torch.Tensor) -> None:
        self._copies: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {(tensor.device, tensor.dtype): tensor}
        self._source = tensor

    def like(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.device, x.dtype)
        found = self._copies.get(key)
        if found is None:
            found = self._source.to(device=x.device, dtype=x.dtype)
            self._copies[key] = found
        return found


def first_tensor(output: Any) -> torch.Tensor:
    """The hidden-state tensor of a module output (plain tensor or tuple)."""
    return output[0] if isinstance(output, tuple) else output


def replace_first(output: Any, tensor: torch.Tensor) -> Any:
    """``output`` with its hidden-state tensor replaced, keeping the container type."""
    if isinstance(output, tuple):
        return (tensor, *output[1:])
    return tensor
