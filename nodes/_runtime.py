"""What every node of one compiled mix shares: the spec, its scorer, and its chat models, built once."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from langchain_core.language_models import BaseChatModel

from mix_instructions.schema import MixSpec
from moai.providers import make_chat_model
from nodes.state import Call
from scorer import Predictor, PriorScorer

__all__ = ["MixRunError", "MixRuntime", "nothing_answered"]


class MixRunError(RuntimeError):
    """A query no route of the mix could answer; the message lists what was tried."""


@dataclass
class MixRuntime:
    """The registry of one mix: its chat models are keyed by the names the mix gives them."""

    spec: MixSpec
    source: str = "<mix>"
    scorer: Predictor = field(init=False)
    _models: dict[str, BaseChatModel] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.scorer = PriorScorer({name: model.quality for name, model in self.spec.models.items()})

    def chat_model(self, name: str) -> BaseChatModel:
        """Return the chat model of a pool member, building it on first use."""
        with self._lock:
            if name not in self._models:
                self._models[name] = make_chat_model(name, self.spec.models[name])
            return self._models[name]


def nothing_answered(mix_name: str, calls: list[Call]) -> str:
    """Describe a query that no route answered, listing every attempt."""
    tried = "; ".join(f"{c['model']} at {c['node']}: {c['status']} ({c['error']})" for c in calls) or "nothing"
    return f"mix '{mix_name}': no model answered; tried {tried}"
