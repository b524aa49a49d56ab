"""Named registries: ``register`` a builder under a name, ``build`` it by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Registry:
    """A name -> builder map whose unknown names fail loudly, listing the valid ones."""

    def __init__(self, kind: str):
        self.kind = kind
        self._builders: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable:
        def add(builder: Callable) -> Callable:
            if name in self._builders:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._builders[name] = builder
            return builder

        return add

    def names(self) -> list[str]:
        return sorted(self._builders)

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._builders:
            raise KeyError(f"unknown {self.kind} '{name}'; valid: {', '.join(self.names())}")
        return self._builders[name]

    def build(self, name: str, **kwargs) -> Any:
        return self.get(name)(**kwargs)

    def __contains__(self, name: str) -> bool:
        return name in self._builders
