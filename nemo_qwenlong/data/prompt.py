"""Prompt building (qwenlong-l1-spec.md §2.1) and prompt token lengths cached beside the data.

The template is the released one, character for character. The document and question are
`.strip()`-ed. Multiple-choice items ask for "The correct answer is (insert answer here)"; the
released multiple-choice prompt is not public (spec §11.8), so this format line is our choice,
matching the answer extractor.

Templates by name (`data.prompt_template`): `qwenlong-l1` and `qwenlong-l1.5`. The QwenLong-L1.5 README's
quick-start template (Tongyi-Zhiwen/Qwen-Doc, QwenLong-L1.5/README.md) is the QwenLong-L1 one character
for character (same `<text>` markers, blank lines and format line; its system prompt is commented out),
so both names give the same text; the name is kept so a run says which recipe it follows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nemo_qwenlong.fsio import atomic_write_text

QA_FORMAT = 'Format your response as follows: "Therefore, the answer is (insert answer here)".'
CHOICE_FORMAT = 'Format your response as follows: "The correct answer is (insert answer here)".'
FORMAT_LINE_START = "Format your response as follows:"  # both format lines begin so
TEMPLATE = "Please read the following text and answer the question below.\n\n<text>\n{document}\n</text>\n\n{question}\n\n{format}"
TEMPLATES = {"qwenlong-l1": TEMPLATE, "qwenlong-l1.5": TEMPLATE}  # identical: see the module docstring


def build_prompt(document: str, question: str, *, choice: bool = False, template: str = "qwenlong-l1") -> str:
    """The user message for one item (no system prompt), in the named template (`TEMPLATES`)."""
    if template not in TEMPLATES:
        raise ValueError(f"data.prompt_template={template!r} is not one of {', '.join(TEMPLATES)}")
    return TEMPLATES[template].format(document=document.strip(), question=question.strip(),
                                      format=CHOICE_FORMAT if choice else QA_FORMAT)


def document_from_prompt(prompt: str) -> str | None:
    """The text between the first `<text>` and the last `</text>`, or None when the markers are missing."""
    start, end = prompt.find("<text>"), prompt.rfind("</text>")
    if start < 0 or end < start:
        return None
    return prompt[start + len("<text>"):end].strip()


def question_from_prompt(prompt: str) -> str:
    """The question between the first `</text>` and `Format your response as follows:` (spec §2.1); the
    whole prompt, stripped, when it has no `</text>`."""
    start = prompt.find("</text>")
    if start < 0:
        return prompt.strip()
    body = prompt[start + len("</text>"):]
    end = body.find(FORMAT_LINE_START)
    return (body if end < 0 else body[:end]).strip()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Identifies a tokenizer and its chat template (the cache key for token lengths)."""
    backend = tokenizer.backend_tokenizer.to_str() if hasattr(tokenizer, "backend_tokenizer") else repr(tokenizer)
    payload = backend + "\n" + str(getattr(tokenizer, "chat_template", ""))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def templated_length(tokenizer: Any, messages: Sequence[dict[str, str]]) -> int:
    """Prompt tokens after the chat template with the generation prompt (what the policy reads)."""
    ids = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids)


def _item_digest(messages: Sequence[dict[str, str]]) -> str:
    return hashlib.sha1(json.dumps(list(messages), ensure_ascii=False).encode("utf-8")).hexdigest()[:12]


def cache_path_for(data_path: str | Path) -> Path:
    data_path = Path(data_path)
    return data_path.with_name(data_path.name + ".lengths.json")


def prompt_lengths(
    items: Sequence[Any], tokenizer: Any, *, cache_path: str | Path | None = None, progress: bool = False
) -> dict[str, int]:
    """item_id -> templated prompt tokens; computed once per (tokenizer, item text) and cached as JSON.

    The cache holds one table per tokenizer fingerprint; an entry is reused only if the item's
    messages hash is unchanged. Written atomically.
    """
    fingerprint = tokenizer_fingerprint(tokenizer)
    cache: dict[str, dict[str, list]] = {}
    if cache_path is not None and Path(cache_path).exists():
        cache = json.loads(Path(cache_path).read_text(encoding="utf-8"))
    table = cache.setdefault(fingerprint, {})
    out: dict[str, int] = {}
    todo = [it for it in items if table.get(it.item_id, [None])[0] != _item_digest(it.messages)]
    if todo:
        from tqdm import tqdm

        for it in tqdm(todo, desc="prompt lengths", unit="item", disable=not progress):
            table[it.item_id] = [_item_digest(it.messages), templated_length(tokenizer, it.messages)]
        if cache_path is not None:
            atomic_write_text(cache_path, json.dumps(cache))
    for it in items:
        out[it.item_id] = int(table[it.item_id][1])
    return out
