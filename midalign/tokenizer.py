"""Tokenizer and chat formatting from a HF model folder (`tokenizers` + the checkpoint's own chat template).

The chat template is rendered with jinja2's sandbox (no code from a checkpoint ever runs outside it),
with limits on each render's time and output size (a template that loops for ever or writes gigabytes
stops with an error), and with the options the ecosystem uses (trim_blocks, lstrip_blocks). Rendered
prompts already hold their special tokens, so they are encoded without adding any again (no double BOS).

Paper §3 / App. D.2: the task loss covers the answer and the model's end-of-turn token only;
`supervised_ids` returns the two parts separately so the prompt can be masked.

`released_template=True` reproduces how the paper's released Llama-3 adapters were trained (the
official scripts' `--no-default-template`): the rendered prompt loses `<|begin_of_text|>`, gains a
newline after each `<|eot_id|>`, and is then encoded with the tokenizer's own special tokens, which
for Llama 3 puts the BOS back in front, exactly once.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range
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


RENDER_SECONDS = 2.0  # one render takes ~50 µs; a template still running after this never ends in practice
RENDER_CHARS = 64 * 1024  # output allowed beyond 16 characters per character of the messages


class LimitedSandbox(ImmutableSandboxedEnvironment):
    """jinja2's immutable sandbox with a deadline, checked at every call, loop step of `range` and output
    chunk, and a size limit on `*` / `**` results and on the rendered text."""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, **options):
        super().__init__(**options)
        self.deadline, self.max_chars = float("inf"), RENDER_CHARS
        self.globals["range"] = lambda *args: _TimedRange(self, safe_range(*args))

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateError(f"rendering took longer than {RENDER_SECONDS:g} s (a chat template loops for ever?)")

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja2's signature)
        __self.tick()
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        self.tick()
        if operator == "*":
            sizes = [len(x) for x in (left, right) if isinstance(x, (str, list, tuple))]
            times = [x for x in (left, right) if isinstance(x, int)]
            if sizes and times and sizes[0] * times[0] > self.max_chars:
                raise TemplateError(f"a template expression would make {sizes[0] * times[0]:,} items "
                                    f"(limit {self.max_chars:,})")
        if operator == "**" and isinstance(right, int) and abs(right) > 64:
            raise TemplateError(f"a template raises to the power {right} (limit 64)")
        return super().call_binop(context, operator, left, right)

    def render_within_limits(self, template, limit_chars: int, **variables) -> str:
        """The template's text, stopped with a TemplateError past RENDER_SECONDS or `limit_chars`."""
        self.deadline, self.max_chars = time.monotonic() + RENDER_SECONDS, limit_chars
        try:
            parts, size = [], 0
            for chunk in template.generate(**variables):
                size += len(chunk)
                if size > limit_chars:
                    raise TemplateError(f"the rendered prompt exceeds {limit_chars:,} characters")
                self.tick()
                parts.append(chunk)
            return "".join(parts)
        finally:
            self.deadline = float("inf")


class _TimedRange:
    """`range` for templates: a loop over it checks the render's deadline at every step."""

    def __init__(self, env: LimitedSandbox, r: range):
        self.env, self.r = env, r

    def __iter__(self):
        for i in self.r:
            self.env.tick()
            yield i

    def __len__(self) -> int:
        return len(self.r)

    def __getitem__(self, i):
        return self.r[i]

    def __reversed__(self):
        return iter(_TimedRange(self.env, self.r[::-1]))


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
        template = _chat_template(config.get("chat_template"), folder / "tokenizer_config.json")
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
        self._env = LimitedSandbox(trim_blocks=True, lstrip_blocks=True)
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
            limit = RENDER_CHARS + 16 * sum(len(str(m.get("content") or "")) for m in messages)
            return self._env.render_within_limits(
                self._compiled, limit, messages=messages, add_generation_prompt=add_generation_prompt,
                **{k: v for k, v in self.special_tokens.items() if v is not None})
        except TemplateError as e:
            raise TokenizerError(f"chat template failed: {e}") from e
        except Exception as e:  # the template is the checkpoint's code: whatever it raises is its failure
            raise TokenizerError(f"chat template failed: {type(e).__name__}: {e}") from e

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


def _chat_template(value: Any, path: Path) -> str | None:
    """tokenizer_config.json's `chat_template`: a string, or named templates [{"name", "template"}, …] of
    which 'default' is used; anything else is an error naming the file."""
    if isinstance(value, list):
        if not all(isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("template"), str)
                   for t in value):
            raise TokenizerError(f"{path}: chat_template is a list whose items are not all {{\"name\": …, "
                                 f"\"template\": …}} strings; fix the file or put the template in chat_template.jinja")
        named = {t["name"]: t["template"] for t in value}
        if "default" not in named:
            raise TokenizerError(f"{path}: chat_template names {', '.join(named)} but no 'default' template; "
                                 f"rename the one to use 'default'")
        return named["default"]
    if value is not None and not isinstance(value, str):
        raise TokenizerError(f"{path}: chat_template must be a string or a list of named templates, not "
                             f"{type(value).__name__}")
    return value


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TokenizerError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from e
    if not isinstance(value, dict):
        raise TokenizerError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value
