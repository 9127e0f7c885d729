"""Name → class registries (methods, estimators, budget kinds): one lookup, one error message."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def create(registry: dict[str, Callable[..., T]], name: str, what: str, **options) -> T:
    """An instance of ``registry[name]`` made with ``options``; an unknown name is refused with
    the known ones."""
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}; known: {', '.join(registry)}")
    return registry[name](**options)
