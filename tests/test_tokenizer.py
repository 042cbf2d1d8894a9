"""Chat prompts: the released-adapter template (`--no-default-template`) against the official scripts'
own recipe run through transformers (apply_chat_template, the two string replacements, then the
tokenizer's call with its default special tokens)."""

from __future__ import annotations

import json
import shutil

import pytest

from midalign.data.tasks import SLOT_SYSTEM
from midalign.tokenizer import ChatTokenizer, TokenizerError

transformers = pytest.importorskip("transformers")

# A Llama-3-style chat template (header tokens, <|eot_id|> after every turn, BOS from the template).
LLAMA3 = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
          "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
          "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")


@pytest.fixture()
def llama3_tokenizer(tiny_chat_checkpoint, tmp_path):
    """The tiny chat tokenizer with Llama 3's special tokens and BOS post-processor."""
    from tokenizers import AddedToken, Tokenizer, processors

    folder = tmp_path / "llama3"
    shutil.copytree(tiny_chat_checkpoint, folder)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    specials = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]
    tok.add_special_tokens([AddedToken(t, special=True) for t in specials])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos)])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "chat_template": LLAMA3, "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "pad_token": "<|endoftext|>"}))
    return folder


def test_released_template_matches_the_official_recipe(llama3_tokenizer):
    messages = [{"role": "system", "content": SLOT_SYSTEM}, {"role": "user", "content": "wake me up at five am this week"}]
    hf = transformers.AutoTokenizer.from_pretrained(llama3_tokenizer)
    text = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    official = hf(text.replace("<|eot_id|>", "<|eot_id|>\n").replace("<|begin_of_text|>", ""))["input_ids"]
    ours = ChatTokenizer(llama3_tokenizer, released_template=True).chat_ids(messages)
    assert ours == official
    bos = hf.convert_tokens_to_ids("<|begin_of_text|>")
    assert ours.count(bos) == 1 and ours[0] == bos  # one BOS, from the tokenizer
    assert "<|eot_id|>\n<|start_header_id|>user" in hf.decode(ours)
    default = ChatTokenizer(llama3_tokenizer).chat_ids(messages)
    assert default == hf(text, add_special_tokens=False)["input_ids"] != ours


def test_released_template_needs_a_llama3_template(tiny_chat_checkpoint):
    with pytest.raises(TokenizerError, match="no <\\|eot_id\\|>"):
        ChatTokenizer(tiny_chat_checkpoint, released_template=True)
