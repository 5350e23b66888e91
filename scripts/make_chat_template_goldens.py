#!/usr/bin/env python3
"""Writes tests/fixtures/chat_template/goldens.json: prompts rendered by Hugging Face
transformers' chat-template machinery, which tests/chat_template.rs compares with
ember's renderer (runtime/src/chat) exactly.

Usage (from the workspace root):
    ~/.cache/ember/venv-ref/bin/python scripts/make_chat_template_goldens.py \\
        [--models DIR] [--llama-cpp SDIST_OR_DIR] [--gemma3 FILE [--gemma3-origin TEXT]]
        [--cache DIR]

Templates, each golden recording where its text came from ("source"):
  smollm2      SmolLM2's own (../shared/models/smollm2-135m-instruct-hf), rendered with
               its tokenizer's apply_chat_template.
  chatml, llama2, llama3, gemma
               ember's built-ins (runtime/src/chat/*.jinja). Llama 2's is rendered with
               the Llama 2 tokenizer's apply_chat_template(chat_template=...). gemma.jinja
               is Gemma 3's own template (the Rust test checks it equals gemma3's).
  gemma3       Gemma 3's instruct template, from --gemma3 FILE: a GGUF with
               `tokenizer.chat_template`, a Hugging Face tokenizer_config.json or
               chat_template.json, or a .jinja file (--gemma3-origin: where that file came
               from, recorded as the source). Default: the Gemma 3 GGUF in the
               model cache; the Gemma-3-270M *base* GGUF that scripts/fetch_models.sh
               fetches carries no template, and then the text already in goldens.json
               is kept (with its recorded source).
  qwen2.5      `tokenizer.chat_template` of the Qwen2.5-Coder-0.5B-Instruct GGUF in the
               model cache (scripts/fetch_models.sh --qwen).
  qwen3, phi3.5, llama3.1, llama3.2
               llama.cpp's copies of the official templates (models/templates/*.jinja,
               fetched from the Hub by its scripts/get_chat_template.py), read from the
               llama-cpp-python 0.3.36 sdist: --llama-cpp (the .tar.gz or an unpacked
               directory), else <cache>/llama_cpp_python-0.3.36.tar.gz, downloaded with
               `pip download llama-cpp-python==0.3.36 --no-deps --no-binary :all:`.
A real template whose source is unavailable keeps the text recorded in goldens.json.

Everything except SmolLM2's and Llama 2's is rendered with render_jinja_template,
the function apply_chat_template calls, with the arguments it passes by default:
messages, tools=None, documents=None, add_generation_prompt and the tokenizer's
bos_token / eos_token (the texts ember passes: the GGUF's BOS / EOS tokens).
strftime_now (Llama 3.2 prints "Today Date") reads a clock pinned to STRFTIME_NOW,
recorded in the goldens so the Rust test pins ember's clock to the same instant.
Each case records the messages, add_generation_prompt, and either the rendered
text or the error transformers raised.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
from datetime import datetime

import transformers
from transformers.utils import chat_template_utils as ctu

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join(ROOT, "..", "shared", "models")
OUT = os.path.join(ROOT, "tests", "fixtures", "chat_template", "goldens.json")
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "ember")

# The instant strftime_now sees (a one-digit day: "%d" must zero-pad it).
STRFTIME_NOW = datetime(2025, 3, 9, 14, 5, 6)

LLAMA_CPP_SDIST = "llama_cpp_python-0.3.36"
LLAMA_CPP_PIP = "llama-cpp-python==0.3.36"
LLAMA_CPP_TEMPLATES = "vendor/llama.cpp/models/templates"

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
    # Qwen3 drops the reasoning of turns before the last user message and keeps it
    # (re-formatted) after it.
    "thinking_history": [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\nAdd them.\n</think>\n\n4"},
        {"role": "user", "content": "And 3+3?"},
    ],
    "thinking_last": [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\n\nAdd them.\n\n</think>\n\n\n4"},
    ],
    # Python's str.strip() / the trim filter also strip U+001C..U+001F; Rust's trim does not.
    "whitespace_edges": [
        {"role": "system", "content": "\x1f\u3000 Be brief.\xa0"},
        {"role": "user", "content": " \x1c hi \x1f"},
    ],
    "tool_result": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "tool", "content": "{\"temp_c\": 21, \"sky\": \"clear\"}"},
    ],
}

# BOS / EOS texts the built-in templates are rendered with (as their model families use).
SPECIALS = {
    "chatml": ("<|im_start|>", "<|im_end|>"),
    "llama2": ("<s>", "</s>"),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
    "gemma": ("<bos>", "<eos>"),
}

# Real templates: name -> (BOS, EOS texts of the model's tokenizer as ember passes them).
REAL = {
    "gemma3": ("<bos>", "<eos>"),
    "qwen2.5": ("<|endoftext|>", "<|im_end|>"),
    "qwen3": ("<|endoftext|>", "<|im_end|>"),
    "phi3.5": ("<s>", "<|endoftext|>"),
    "llama3.1": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama3.2": ("<|begin_of_text|>", "<|eot_id|>"),
}
LLAMA_CPP_FILES = {
    "qwen3": "Qwen-Qwen3-0.6B.jinja",
    "phi3.5": "microsoft-Phi-3.5-mini-instruct.jinja",
    "llama3.1": "meta-llama-Llama-3.1-8B-Instruct.jinja",
    "llama3.2": "meta-llama-Llama-3.2-3B-Instruct.jinja",
}


class PinnedClock(datetime):
    """Stands in for datetime in transformers' strftime_now."""

    @classmethod
    def now(cls, tz=None):
        return STRFTIME_NOW


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


def apply_defaults(source, bos, eos):
    """Renders `source` as apply_chat_template does for a tokenizer with these tokens."""

    def fn(messages, gen):
        out, _ = ctu.render_jinja_template(
            conversations=[messages],
            tools=None,
            documents=None,
            chat_template=source,
            add_generation_prompt=gen,
            bos_token=bos,
            eos_token=eos,
        )
        return out[0]

    return fn


def sha256(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def gguf_template(path):
    """The `tokenizer.chat_template` of the GGUF at `path`, or None."""
    import gguf

    field = gguf.GGUFReader(path).fields.get("tokenizer.chat_template")
    return None if field is None else field.contents()


def template_from_file(path):
    """A chat template from a GGUF, tokenizer_config.json / chat_template.json or .jinja."""
    if path.endswith(".gguf"):
        return gguf_template(path)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".json"):
        return json.loads(text).get("chat_template")
    return text


def llama_cpp_reader(arg, cache):
    """A function reading a file under vendor/llama.cpp/models/templates of the sdist
    (`arg`: the .tar.gz or its unpacked directory; None: the one in `cache`, downloaded
    with pip when missing)."""
    if arg and os.path.isdir(arg):
        root = arg

        def read_dir(name):
            with open(os.path.join(root, LLAMA_CPP_TEMPLATES, name), encoding="utf-8") as f:
                return f.read()

        return read_dir
    sdist = arg or os.path.join(cache, f"{LLAMA_CPP_SDIST}.tar.gz")
    if not os.path.exists(sdist):
        os.makedirs(cache, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", LLAMA_CPP_PIP, "--no-deps",
             "--no-binary", ":all:", "-d", cache],
            check=True,
        )
    tar = tarfile.open(sdist)

    def read_tar(name):
        member = tar.extractfile(f"{LLAMA_CPP_SDIST}/{LLAMA_CPP_TEMPLATES}/{name}")
        return member.read().decode("utf-8")

    return read_tar


def real_templates(args, previous):
    """name -> (template text, source description) for the real families."""
    models = args.models
    found = {}
    gemma3 = args.gemma3 or os.path.join(models, "gemma3-270m", "gemma-3-270m-q4_k_m.gguf")
    if os.path.exists(gemma3):
        text = template_from_file(gemma3)
        if text is not None:
            found["gemma3"] = (text, args.gemma3_origin or f"chat template of {os.path.basename(gemma3)}")
        else:
            print(f"note: {os.path.basename(gemma3)} carries no chat template")
    qwen = os.path.join(models, "qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
    if os.path.exists(qwen):
        found["qwen2.5"] = (gguf_template(qwen), f"tokenizer.chat_template of {os.path.basename(qwen)}")
    read = llama_cpp_reader(args.llama_cpp, args.cache)
    for name, file in LLAMA_CPP_FILES.items():
        found[name] = (read(file), f"PyPI {LLAMA_CPP_PIP} sdist: {LLAMA_CPP_SDIST}/{LLAMA_CPP_TEMPLATES}/{file}")
    out = {}
    for name in REAL:
        if name in found:
            out[name] = found[name]
        elif name in previous:
            print(f"note: {name}: keeping the template recorded in {os.path.relpath(OUT, ROOT)}")
            out[name] = (previous[name]["template"], previous[name]["source"])
        else:
            sys.exit(f"no source for the {name} template (see --help)")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    models = os.environ.get("EMBER_MODELS", os.path.join(CACHE, "models"))
    parser.add_argument("--models", default=models, help="model cache (default: $EMBER_MODELS or ~/.cache/ember/models)")
    parser.add_argument("--llama-cpp", help=f"{LLAMA_CPP_SDIST}.tar.gz or its unpacked directory")
    parser.add_argument("--gemma3", help="GGUF, tokenizer_config.json, chat_template.json or .jinja of Gemma 3")
    parser.add_argument("--gemma3-origin", help="where the --gemma3 file came from (recorded as the source)")
    parser.add_argument("--cache", default=os.path.join(CACHE, "sdist"), help="where the sdist is downloaded (default: ~/.cache/ember/sdist)")
    args = parser.parse_args()

    previous = {}
    if os.path.exists(OUT):
        with open(OUT, encoding="utf-8") as f:
            previous = {t["name"]: t for t in json.load(f)["templates"] if "source" in t}

    ctu.datetime = PinnedClock
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
            fn = apply_defaults(source, bos, eos)
        templates.append({"name": name, "builtin": True, "bos_token": bos, "eos_token": eos, "cases": render_with(fn)})
    for name, (source, where) in real_templates(args, previous).items():
        bos, eos = REAL[name]
        templates.append({
            "name": name,
            "source": where,
            "sha256": sha256(source),
            "template": source,
            "bos_token": bos,
            "eos_token": eos,
            "cases": render_with(apply_defaults(source, bos, eos)),
        })
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump({
            "generator": "scripts/make_chat_template_goldens.py",
            "transformers_version": transformers.__version__,
            "strftime_now": STRFTIME_NOW.isoformat(),
            "templates": templates,
        }, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
