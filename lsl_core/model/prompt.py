"""One prompt template for both modalities: the query (speech frames or question tokens) sits
between a fixed prefix and suffix, so only the query span differs between speech and text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DEFAULT_SYSTEM = "You are a helpful assistant. Answer the question briefly, in one short sentence."
_SENTINEL = "\u2063QUERY\u2063"  # invisible separator: never produced by a real question


@dataclass(frozen=True)
class PromptTemplate:
    kind: Literal["chat", "plain"] = "chat"  # chat: tokenizer's chat template; plain: `plain_format`
    system: str = DEFAULT_SYSTEM  # system prompt (chat templates only)
    plain_format: str = "Question: {query}\nAnswer:"  # for base models without a chat template

    def __post_init__(self) -> None:
        if self.kind not in ("chat", "plain"):
            raise ValueError(f"PromptTemplate.kind must be 'chat' or 'plain', got {self.kind!r}")
        if self.kind == "plain" and self.plain_format.count("{query}") != 1:
            raise ValueError("PromptTemplate.plain_format must contain '{query}' exactly once")

    def render(self, tokenizer, query: str) -> str:
        """The full prompt string for a typed query (what the text modality sees)."""
        if self.kind == "plain" or getattr(tokenizer, "chat_template", None) is None:
            return self.plain_format.replace("{query}", query)
        messages = [{"role": "user", "content": query}]
        if self.system:
            messages.insert(0, {"role": "system", "content": self.system})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def split(self, tokenizer) -> tuple[str, str]:
        """(prefix, suffix) strings around the query."""
        full = self.render(tokenizer, _SENTINEL)
        assert full.count(_SENTINEL) == 1, "template must contain the query exactly once"
        prefix, suffix = full.split(_SENTINEL)
        return prefix, suffix

    def to_dict(self) -> dict:
        return {"kind": self.kind, "system": self.system, "plain_format": self.plain_format}
