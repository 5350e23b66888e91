#!/usr/bin/env python3
"""Writes tests/fixtures/eval/mc_tasks.jsonl (a small multiple-choice task file)
and tests/fixtures/eval/mc_smollm2.json (transformers' scoring of it with
SmolLM2-135M-Instruct), which tests/eval_mc.rs compares with
ember_runtime::eval::choice and `ember eval mc`.

Usage (from the workspace root; torch and transformers, scripts/requirements-ref.txt):
    scripts/fetch_models.sh --hf      # the float32 Hugging Face checkpoint
    python3 -m venv target/venv-ref && target/venv-ref/bin/pip install -r scripts/requirements-ref.txt
    target/venv-ref/bin/python scripts/make_mc_goldens.py [HF_DIR]
HF_DIR defaults to $EMBER_MODELS/smollm2-hf ($EMBER_MODELS: ~/.cache/ember/models).

The scoring is lm-evaluation-harness's for `output_type: multiple_choice`
(lm_eval 0.4, HFLM, causal model), written out here without the harness:
  - continuation = " " + ending (its default target_delimiter);
  - _encode_pair: trailing whitespace of the context moves to the continuation;
    context_enc = encode(context), whole = encode(context + continuation),
    continuation_enc = whole[len(context_enc):]; encode = tokenizer.encode with
    its default add_special_tokens; an empty context is [bos_token_id] (EOS
    without one) and the continuation is encoded alone;
  - the model reads (context_enc + continuation_enc)[:-1] in one unpadded pass;
    log_softmax over the vocabulary in float32, the continuation tokens'
    log-probabilities summed (in float64 here);
  - pred = argmax(lls), pred_norm = argmax(lls / len(ending)) (characters),
    pred_bytes = argmax(lls / len(ending.encode())), first index on ties.

mc_smollm2.json:
  versions                  torch, transformers
  items[]                   per task line: context_ids, continuation_ids (per
                            ending), loglikelihoods (per ending), pred, pred_norm,
                            pred_bytes, label
  acc, acc_norm, acc_bytes  the fractions of items whose prediction is the label
"""
import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "tests", "fixtures", "eval")

# (context, endings, label). Written for this file; varied on purpose: sentence
# completions, questions with "Answer:", a context ending in a space or a
# newline, an empty context, non-ASCII text (characters != bytes), endings of
# very different lengths and one-token endings.
TASKS = [
    ("The kettle began to whistle, so she",
     ["took it off the stove and poured the water into the teapot.",
      "painted the fence a bright shade of blue.",
      "drove to the airport to meet her cousin.",
      "planted three rows of carrots."], 0),
    ("To keep bread fresh for longer, you should",
     ["store it in a cool, dry place in a sealed bag.",
      "leave it in the rain overnight.",
      "feed it to the goldfish.",
      "throw it at the ceiling."], 0),
    ("Question: What is the capital of France?\nAnswer:",
     ["Berlin", "Paris", "Madrid", "Rome"], 1),
    ("Question: How many legs does a spider have?\nAnswer:",
     ["six", "eight", "ten", "four"], 1),
    ("Question: Which planet is closest to the Sun?\nAnswer:",
     ["Mercury", "Jupiter", "Neptune", "Mars"], 0),
    ("The children built a snowman in the yard. When the sun came out, the snowman",
     ["began to melt.", "started to sing.", "grew taller.", "flew away to the moon."], 0),
    ("He tied his running shoes, stretched his legs, and",
     ["went for a long jog around the park.",
      "baked a cake.",
      "fell asleep on the sofa immediately.",
      "sold his car."], 0),
    ("After mixing the flour, eggs and milk, the cook poured the batter into the pan and ",
     ["flipped the pancake when bubbles formed.",
      "mailed it to a friend.",
      "read a newspaper.",
      "washed the car."], 0),
    ("2 + 2 =",
     ["4", "5", "22", "3"], 0),
    ("The opposite of hot is",
     ["cold", "warm", "loud", "tall"], 0),
    ("Water freezes at a temperature of zero degrees",
     ["Celsius.", "Fahrenheit below the boiling point of iron.", "kilometres.", "per hour."], 0),
    ("Le chat dort sur le canapé. Le matin, il",
     ["se réveille et s'étire.",
      "conduit un camion jusqu'à Marseille.",
      "écrit une lettre au président.",
      "répare la télévision."], 0),
    ("Café au lait is made with coffee and",
     ["hot milk.", "cold soup.", "crushed ice and sand.", "orange juice."], 0),
    ("The museum guide pointed at the painting and said: “This was finished in 1889,",
     ["a year before the artist died.”",
      "by a robot from the future.”",
      "using only ketchup.”",
      "on the surface of Mars.”"], 0),
    ("",
     ["The sun rises in the east.",
      "The sun rises in the west.",
      "Sun the rises east in the.",
      "East east east east."], 0),
    ("def add(a, b):\n    return",
     ["a + b", "a - b", "print(a)", "None"], 0),
    ("The library was quiet except for the sound of",
     ["pages turning.", "a marching band rehearsing.", "jet engines.", "thunderous applause."], 0),
    ("She looked at the dark clouds and decided to take",
     ["an umbrella.", "a swim in the lake.", "off her shoes and dance in the desert.", "a nap on the roof."], 0),
    ("Question: What do bees make?\nAnswer:",
     ["honey", "milk", "silk", "bread"], 0),
    ("The train was delayed by an hour, so the passengers",
     ["waited on the platform.",
      "turned into birds.",
      "painted the station green in ten minutes.",
      "ate the tracks."], 0),
    ("In spring, the cherry trees along the river",
     ["burst into pink blossom.", "froze solid.", "walked to the city.", "lost their roots."], 0),
    ("To make a cup of tea, first boil the water, then",
     ["pour it over the tea leaves and let it steep.",
      "freeze it.",
      "pour it on the floor.",
      "put it in the oven for an hour."], 0),
    ("The mechanic lifted the car, removed the flat tyre and\n",
     ["fitted the spare wheel.", "sang a song.", "bought a horse.", "went swimming."], 0),
    ("Numbers in order: one, two, three,",
     ["four", "seven", "ten", "twelve"], 0),
    ("Ein Hund bellt, eine Katze",
     ["miaut.", "fliegt zum Mond.", "schreibt ein Buch.", "fährt Fahrrad."], 0),
    ("The recipe calls for 200 g of sugar, 3 eggs and",
     ["250 g of flour.", "a bicycle.", "two litres of motor oil.", "a kilometre of string."], 0),
]


def encode(tok, text):
    return tok.encode(text)


def encode_pair(tok, context, continuation):
    if context == "":
        prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        cont = tok.encode(continuation, add_special_tokens=False)
        if cont[0] == prefix:
            return cont[:1], cont[1:]
        return [prefix], cont
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = encode(tok, context + continuation)
    ctx = encode(tok, context)
    return ctx, whole[len(ctx):]


def loglikelihood(model, ctx, cont):
    ids = torch.tensor([(ctx + cont)[:-1]])
    with torch.no_grad():
        logits = model(ids).logits[0].float()
    logp = torch.nn.functional.log_softmax(logits, dim=-1)
    rows = logp[len(ctx) - 1:]
    assert rows.shape[0] == len(cont)
    return float(sum(float(rows[i, t]) for i, t in enumerate(cont)))


def main():
    models = os.environ.get("EMBER_MODELS", os.path.expanduser("~/.cache/ember/models"))
    hf_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(models, "smollm2-hf")
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    model.eval()

    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "mc_tasks.jsonl"), "w", encoding="utf-8", newline="\n") as f:
        for context, endings, label in TASKS:
            line = {"context": context, "endings": endings, "label": label}
            f.write(json.dumps(line, ensure_ascii=False) + "\n")

    items = []
    for context, endings, label in TASKS:
        pairs = [encode_pair(tok, context, " " + e) for e in endings]
        ctx = pairs[0][0]
        assert all(p[0] == ctx for p in pairs)
        lls = np.array([loglikelihood(model, c, k) for c, k in pairs])
        chars = np.array([float(len(e)) for e in endings])
        nbytes = np.array([float(len(e.encode("utf-8"))) for e in endings])
        items.append({
            "context_ids": ctx,
            "continuation_ids": [k for _, k in pairs],
            "loglikelihoods": [float(x) for x in lls],
            "pred": int(np.argmax(lls)),
            "pred_norm": int(np.argmax(lls / chars)),
            "pred_bytes": int(np.argmax(lls / nbytes)),
            "label": label,
        })

    def acc(key):
        return sum(1 for it in items if it[key] == it["label"]) / len(items)

    golden = {
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "model": "SmolLM2-135M-Instruct (float32, scripts/rebuild_smollm2_hf.py)",
        "items": items,
        "acc": acc("pred"),
        "acc_norm": acc("pred_norm"),
        "acc_bytes": acc("pred_bytes"),
    }
    with open(os.path.join(OUT, "mc_smollm2.json"), "w", encoding="utf-8", newline="\n") as f:
        json.dump(golden, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"{len(items)} items: acc {golden['acc']:.4f} acc_norm {golden['acc_norm']:.4f} "
          f"acc_bytes {golden['acc_bytes']:.4f}")


if __name__ == "__main__":
    main()
