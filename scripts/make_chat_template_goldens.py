#!/usr/bin/env python3
"""Writes tests/fixtures/chat_template/goldens.json: prompts rendered by Hugging Face
transformers' chat-template machinery, which tests/chat_template.rs compares with
ember's renderer (runtime/src/chat) exactly.

Usage (from the workspace root):
    ~/.cache/ember/venv-ref/bin/python scripts/make_chat_template_goldens.py

Templates: SmolLM2's own (../shared/models/smollm2-135m-instruct-hf, rendered with
its tokenizer's apply_chat_template), and ember's built-in chatml / llama2 / llama3 /
gemma (runtime/src/chat/*.jinja). Llama 2's is rendered with the Llama 2 tokenizer's
apply_chat_template(chat_template=...); the others with transformers' own template
compiler (the function apply_chat_template uses) and the BOS/EOS texts below.
Each golden records the messages, add_generation_prompt, bos/eos texts, and either
the rendered text or the error transformers raised.
"""
import json
import os

import transformers
from transformers.utils import chat_template_utils as ctu

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join(ROOT, "..", "shared", "models")
OUT = os.path.join(ROOT, "tests", "fixtures", "chat_template", "goldens.json")

CONVERSATIONS = {
    "user": [{"role": "user", "content": "What is the capital of France?"}],
    "system_user": [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Hi!"},
    ],
    "multi_turn": [
        {"role": "system", "content": "  Be kind.\n"},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": " Hi there! How can I help? "},
        {"role": "user", "content": "Write\ncode:\n\tfn main() {}\n"},
    ],
    "assistant_last": [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ],
    "unicode_and_markup": [
        {"role": "user", "content": "你好 👋🏽 <|im_end|> {{ not a tag }} {% raw %} ' \" \\"},
    ],
    "not_alternating": [
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
    ],
}

# BOS / EOS texts the built-in templates are rendered with (as their model families use).
SPECIALS = {
    "chatml": ("<|im_start|>", "<|im_end|>"),
    "llama2": ("<s>", "</s>"),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
    "gemma": ("<bos>", "<eos>"),
}


def render_with(fn):
    cases = []
    for name, messages in CONVERSATIONS.items():
        for gen in (True, False):
            case = {"conversation": name, "messages": messages, "add_generation_prompt": gen}
            try:
                case["text"] = fn(messages, gen)
            except Exception as e:  # transformers raises TemplateError for raise_exception
                case["error"] = f"{type(e).__name__}: {e}"
            cases.append(case)
    return cases


def main():
    templates = []
    smol_dir = os.path.join(SHARED, "smollm2-135m-instruct-hf")
    smol = transformers.AutoTokenizer.from_pretrained(smol_dir)
    templates.append({
        "name": "smollm2",
        "template": smol.chat_template,
        "bos_token": smol.bos_token,
        "eos_token": smol.eos_token,
        "cases": render_with(lambda m, g: smol.apply_chat_template(m, tokenize=False, add_generation_prompt=g)),
    })
    llama = transformers.LlamaTokenizer.from_pretrained(os.path.join(SHARED, "llama2-tokenizer"))
    for name, (bos, eos) in SPECIALS.items():
        with open(os.path.join(ROOT, "runtime", "src", "chat", f"{name}.jinja"), encoding="utf-8") as f:
            source = f.read()
        if name == "llama2":
            assert (llama.bos_token, llama.eos_token) == (bos, eos)
            fn = lambda m, g, s=source: llama.apply_chat_template(m, tokenize=False, add_generation_prompt=g, chat_template=s)
        else:
            compiled = ctu._compile_jinja_template(source)
            fn = lambda m, g, c=compiled, b=bos, e=eos: c.render(messages=m, add_generation_prompt=g, bos_token=b, eos_token=e)
        templates.append({"name": name, "builtin": True, "bos_token": bos, "eos_token": eos, "cases": render_with(fn)})
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump({
            "generator": "scripts/make_chat_template_goldens.py",
            "transformers_version": transformers.__version__,
            "templates": templates,
        }, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
