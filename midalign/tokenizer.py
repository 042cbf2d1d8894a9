"""Tokenizer and chat formatting from a HF model folder (`tokenizers` + the checkpoint's own chat template).

The chat template is rendered with jinja2's sandbox (no code from a checkpoint ever runs outside it),
with the options the ecosystem uses (trim_blocks, lstrip_blocks). Rendered prompts already hold their
special tokens, so they are encoded without adding any again (no double BOS).

Paper §3 / App. D.2: the task loss covers the answer and the model's end-of-turn token only;
`supervised_ids` returns the two parts separately so the prompt can be masked.

`released_template=True` reproduces how the paper's released Llama-3 adapters were trained (the
official scripts' `--no-default-template`): the rendered prompt loses `<|begin_of_text|>`, gains a
newline after each `<|eot_id|>`, and is then encoded with the tokenizer's own special tokens, which
for Llama 3 puts the BOS back in front, exactly once.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from midalign.errors import MidalignError

Message = dict[str, str]


class TokenizerError(MidalignError, ValueError):
    """A tokenizer folder or chat template that cannot be used."""


def _token_text(value: Any) -> str | None:
    """Special tokens appear as plain strings or as {"content": ...} dicts in tokenizer_config.json."""
    if isinstance(value, dict):
        return value.get("content")
    return value


def _raise_exception(message: str):
    raise TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class ChatTokenizer:
    """Encode/decode text and render chat prompts exactly as the checkpoint's template does."""

    def __init__(self, folder: str | Path, released_template: bool = False):
        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise TokenizerError(f"{folder}: no tokenizer.json; midalign needs a fast (tokenizers) tokenizer file")
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as e:  # the tokenizers library raises a bare Exception for a malformed file
            raise TokenizerError(f"{path}: not a readable tokenizers file ({e}); re-download or re-convert the "
                                 f"model") from e
        config = _read_json(folder / "tokenizer_config.json")
        template = config.get("chat_template")
        if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
            template = {t["name"]: t["template"] for t in template}.get("default")
        if (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text()
        self.chat_template: str | None = template
        self.special_tokens = {k: _token_text(config.get(k)) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
        generation = _read_json(folder / "generation_config.json")
        eos = generation.get("eos_token_id", config.get("eos_token_id"))
        eos_ids = eos if isinstance(eos, list) else [eos] if eos is not None else []
        if not eos_ids and self.special_tokens["eos_token"]:
            eos_ids = [self.token_id(self.special_tokens["eos_token"])]
        if not eos_ids:
            raise TokenizerError(f"{folder}: no eos_token_id in generation_config.json or tokenizer_config.json")
        self.eos_ids: list[int] = eos_ids
        pad = self.special_tokens["pad_token"]
        self.pad_id: int = self.token_id(pad) if pad else eos_ids[0]
        self._env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        self._env.filters["tojson"] = _tojson
        self._env.globals["raise_exception"] = _raise_exception
        self._env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        self._compiled = None  # the chat template, compiled once (compiling costs ~10 ms, rendering ~50 µs)
        self._eot_id: int | None = None
        self.released_template = released_template
        if released_template and "<|eot_id|>" not in (template or ""):
            raise TokenizerError(f"{folder}: --no-default-template is the Llama-3 training template of the released "
                                 f"adapters; this chat template has no <|eot_id|>")

    # ----------------------------------------------------------------------------- plain text

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str) -> int:
        i = self.tokenizer.token_to_id(token)
        if i is None:
            raise TokenizerError(f"token {token!r} is not in the vocabulary")
        return i

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids; `add_special_tokens` applies the tokenizer's own post-processor (Llama 3 adds BOS)."""
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=add_special_tokens)]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    # ----------------------------------------------------------------------------- chat

    def render_chat(self, messages: list[Message], add_generation_prompt: bool = True) -> str:
        """The prompt text produced by the checkpoint's chat template."""
        if not self.chat_template:
            raise TokenizerError("this tokenizer has no chat_template; use an instruct/chat checkpoint")
        try:
            if self._compiled is None:
                self._compiled = self._env.from_string(self.chat_template)
            return self._compiled.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                   **{k: v for k, v in self.special_tokens.items() if v is not None})
        except TemplateError as e:
            raise TokenizerError(f"chat template failed: {e}") from e

    def chat_ids(self, messages: list[Message], add_generation_prompt: bool = True) -> list[int]:
        """Prompt ids for generation (special tokens come from the template, none are added; with the
        released template the tokenizer adds its own, as the official scripts' tokenizer call did)."""
        return self.chat_ids_batch([messages], add_generation_prompt)[0]

    def chat_ids_batch(self, conversations: list[list[Message]], add_generation_prompt: bool = True) -> list[list[int]]:
        """`chat_ids` of many conversations: rendered one by one, tokenized in one parallel batch."""
        texts = [self.render_chat(m, add_generation_prompt) for m in conversations]
        if self.released_template:
            texts = [t.replace("<|eot_id|>", "<|eot_id|>\n").replace("<|begin_of_text|>", "") for t in texts]
        return self.encode_batch(texts, add_special_tokens=self.released_template)

    @property
    def eot_id(self) -> int:
        """The token that ends an assistant turn (`<|eot_id|>`, `<|im_end|>`), read off the template."""
        if self._eot_id is None:
            sentinel = "midalign-answer-sentinel"
            text = self.render_chat([{"role": "user", "content": "x"}, {"role": "assistant", "content": sentinel}],
                                    add_generation_prompt=False)
            after = text.split(sentinel, 1)[1]
            ids = self.tokenizer.encode(after, add_special_tokens=False)
            special = [i for i, tok in zip(ids.ids, ids.tokens) if self._is_special(tok)]
            if not special:
                raise TokenizerError(f"chat template puts no special token after an assistant answer ({after!r})")
            self._eot_id = special[0]
        return self._eot_id

    def _is_special(self, token: str) -> bool:
        return any(t.content == token and t.special for t in self.tokenizer.get_added_tokens_decoder().values())

    def supervised_ids(self, messages: list[Message], answer: str) -> tuple[list[int], list[int]]:
        """(prompt ids, answer ids + end-of-turn id) for task training: only the second part gets loss."""
        return self.supervised_ids_batch([messages], [answer])[0]

    def supervised_ids_batch(self, conversations: list[list[Message]], answers: list[str]
                             ) -> list[tuple[list[int], list[int]]]:
        """`supervised_ids` of many examples, tokenized in batches."""
        prompts = self.chat_ids_batch(conversations, add_generation_prompt=True)
        return [(p, a + [self.eot_id]) for p, a in zip(prompts, self.encode_batch(answers, False))]


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TokenizerError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from e
