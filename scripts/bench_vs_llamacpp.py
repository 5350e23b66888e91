#!/usr/bin/env python3
"""Prints the markdown table of scripts/bench_vs_llamacpp.sh from its run folder.

Usage: bench_vs_llamacpp.py RUN_DIR

RUN_DIR holds meta.txt (key=value lines written by the shell script), runs.tsv (one
line per run: round, cell, threads, side, JSON file name) and the JSON output of every
`llama-bench -o json` and `ember bench --json` run. Standard library only.
"""

import json
import os
import statistics
import sys

CELL_NAMES = {
    "135m-q8_0": ("135M", "Q8_0"),
    "135m-q4_0": ("135M", "Q4_0"),
    "1.1b-q8_0": ("1.1B", "Q8_0"),
    "1.1b-q4_0": ("1.1B", "Q4_0"),
}

# Bytes in a GB, as `ember bench` quotes read bandwidth.
GB = 1e9


def read_meta(path):
    meta = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line:
                key, _, value = line.partition("=")
                meta[key] = value
    return meta


def llama_speeds(doc):
    """(decode tok/s, prefill tok/s, first record) from llama-bench's JSON list."""
    decode = prefill = None
    for rec in doc:
        if rec.get("n_gen", 0) > 0 and rec.get("n_prompt", 0) == 0:
            decode = rec["avg_ts"]
        elif rec.get("n_prompt", 0) > 0 and rec.get("n_gen", 0) == 0:
            prefill = rec["avg_ts"]
    return decode, prefill, doc[0] if doc else {}


def ember_speeds(doc):
    """(decode tok/s, prefill tok/s, read bandwidth GB/s or None, document)."""
    row = doc["results"][0]
    return row.get("decode_tok_s"), row.get("prefill_tok_s"), row.get("read_bandwidth_gb_s"), doc


def fmt(x, digits=None):
    if x is None:
        return "—"
    if digits is None:
        digits = 1 if x >= 10 else 2
    return f"{x:.{digits}f}"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    run_dir = sys.argv[1]
    meta = read_meta(os.path.join(run_dir, "meta.txt"))
    # data[(cell, threads)][round][side] = parsed speeds
    data = {}
    llama_rec = ember_doc = None
    with open(os.path.join(run_dir, "runs.tsv"), encoding="utf-8") as f:
        for line in f:
            rnd, cell, threads, side, name = line.rstrip("\n").split("\t")
            with open(os.path.join(run_dir, name), encoding="utf-8") as jf:
                doc = json.load(jf)
            if side == "llama":
                parsed = llama_speeds(doc)
                llama_rec = llama_rec or parsed[2]
            else:
                parsed = ember_speeds(doc)
                ember_doc = ember_doc or parsed[3]
            data.setdefault((cell, int(threads)), {}).setdefault(int(rnd), {})[side] = parsed

    rounds = int(meta["rounds"])
    bandwidth = meta.get("bandwidth") == "1"
    prefill = meta.get("prefill") == "1"
    llama_rec = llama_rec or {}
    lcpp = f"commit {llama_rec.get('build_commit', '?')}"

    print(f"### Ember vs llama.cpp on {meta['cpu'].split(',')[0]}")
    print()
    tier = ember_doc.get("kernel_tier", "?") if ember_doc else "?"
    print(f"- CPU: {meta['cpu']} ({meta['cpus']}); Ember kernel tier: {tier}")
    print(f"- Ember: commit {meta['ember_commit']}, release build")
    print(
        f"- llama.cpp: {lcpp}, from the llama-cpp-python {meta['lcpp_version']} sdist, "
        "CPU build, -DGGML_NATIVE=ON"
    )
    load = f"; load average at the start {meta['load']}" if meta.get("load") else ""
    print(f"- Date: {meta['date']}{load}")
    print(
        "- Models: random weights (scripts/make_bench_gguf.py), llama-quantize to Q8_0 / Q4_0; "
        f"Ember's from the same files: `{meta.get('convert', 'ember convert')}`"
    )
    print(f"- Command: `{meta['command']}`")
    print(f"- Each run: `{meta['llama_cmd']}` and `{meta['ember_cmd']}`, one after the")
    print(
        f"  other, the order flipped every round; {rounds} round(s); tok/s are medians over "
        "rounds; the ratio is the median of the per-round ratios, with their min..max."
    )
    if bandwidth:
        print(
            "- Bound: `ember bench`'s measured read bandwidth (median over rounds) divided "
            "by the weight bytes each side reads per token from its own file"
        )
    print()

    def table(title, index, unit_note):
        print(f"#### {title} ({unit_note})")
        print()
        head = "| model | type | threads | llama.cpp tok/s | Ember tok/s | Ember / llama.cpp | min..max |"
        rule = "|---|---|---:|---:|---:|---:|---|"
        if bandwidth and index == 0:
            head += " read GB/s | % of bound llama.cpp | % of bound Ember |"
            rule += "---:|---:|---:|"
        print(head)
        print(rule)
        for cell in meta["cells"].split(","):
            for threads in (int(t) for t in meta["threads"].split(",")):
                per_round = data.get((cell, threads), {})
                l_vals, e_vals, ratios, bws = [], [], [], []
                ember_wbytes = None
                for rnd in sorted(per_round):
                    sides = per_round[rnd]
                    lv = sides.get("llama", (None,) * 3)[index]
                    ev = sides.get("ember", (None,) * 3)[index]
                    if lv is not None:
                        l_vals.append(lv)
                    if ev is not None:
                        e_vals.append(ev)
                    if lv and ev is not None:
                        ratios.append(ev / lv)
                    if "ember" in sides:
                        bw, doc = sides["ember"][2], sides["ember"][3]
                        if bw is not None:
                            bws.append(bw)
                        ember_wbytes = doc.get("decode_weight_bytes")
                model, dtype = CELL_NAMES[cell]
                lm = statistics.median(l_vals) if l_vals else None
                em = statistics.median(e_vals) if e_vals else None
                ratio = f"{statistics.median(ratios):.2f}x" if ratios else "—"
                spread = f"{min(ratios):.2f}..{max(ratios):.2f}" if ratios else "—"
                row = f"| {model} | {dtype} | {threads} | {fmt(lm)} | {fmt(em)} | {ratio} | {spread} |"
                if bandwidth and index == 0:
                    bw = statistics.median(bws) if bws else None
                    cols = [fmt(bw)]
                    llama_wbytes = meta.get(f"llama_wbytes.{cell}")
                    for value, wbytes in ((lm, llama_wbytes), (em, ember_wbytes)):
                        if bw is None or value is None or not wbytes:
                            cols.append("—")
                        else:
                            bound = bw * GB / int(wbytes)
                            cols.append(f"{100 * value / bound:.0f} %")
                    row += " " + " | ".join(cols) + " |"
                print(row)
        print()

    table(f"Decode, tg{meta['tokens']}", 0, "tokens/s")
    if prefill:
        table(f"Prefill, pp{meta['prompt']}", 1, "tokens/s")


if __name__ == "__main__":
    main()
