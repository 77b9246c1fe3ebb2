#!/usr/bin/env python3
"""Turns the log of benchmarks/compare_all.sh into the markdown table of docs/benchmarks.md:
medians over rounds with the spread (min-max), ratios against PyTorch and oneDNN, and each of
issue #5's targets marked met or not. Standard library only.
    python3 benchmarks/summarize_comparison.py build/benchmarks/compare/log.txt 1024
"""
import json
import re
import statistics
import sys
from collections import defaultdict


def parse(path):
    values = defaultdict(list)  # (source, threads, metric) -> [values]
    blocks = defaultdict(list)  # (label, threads, round) -> lines (Google Benchmark JSON)
    round_no = 0
    for raw in open(path, encoding="utf-8"):
        line = raw.rstrip("\n")
        if line.startswith("== round"):
            round_no += 1
            continue
        m = re.match(r"(\w+) threads=(\d+) \| (.*)$", line)
        if not m:
            continue
        label, threads, text = m.group(1), int(m.group(2)), m.group(3)
        if label == "kernels":
            blocks[(label, threads, round_no)].append(text)
            continue
        if text.startswith("peak_rss_kib"):
            values[(label, threads, "peak_rss_mib")].append(int(text.split()[1]) / 1024)
            continue
        # Only the summary lines ("variant ..." lines are PyTorch's individual configurations).
        t = re.match(r"training step .*?: ([\d.]+) ms", text)
        if t:
            values[(label, threads, "train_ms")].append(float(t.group(1)))
        i = re.match(r"(clean-branch|pretrained-model) inference \((\w+)[^)]*\).*\(([\d.]+) Mpx/s\)", text)
        if i:
            mode = {"best": "exact"}.get(i.group(2), i.group(2))  # PyTorch's best of eager/frozen
            values[(label, threads, f"infer_{mode}_mpxs")].append(float(i.group(3)))
        if label.startswith("onednn") and text.startswith("{"):
            j = json.loads(text)
            if j.get("status") == "ok":
                values[(label, threads, f"{j['algorithm']}_{j['pass']}_gflops")].append(j["gflops"])
    for (label, threads, _), lines in blocks.items():
        text = "\n".join(lines)
        start = text.find("{")
        if start < 0:
            continue
        doc = json.loads(text[start:])
        for b in doc.get("benchmarks", []):
            # With --benchmark_repetitions only the median counts (onednn_conv reports medians too).
            if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
                continue
            # A benchmark this CPU cannot run (an instruction set it lacks) reports an error and
            # no figures: its rows stay "not measured".
            if b.get("error_occurred") or "GFLOP/s" not in b:
                continue
            p = int(re.search(r"pass:(\d+)", b["name"]).group(1))
            name = ["direct_forward", "direct_backward_data", "direct_backward_weights", "winograd_forward", "fused",
                    "winograd_backward_data", "winograd_backward_weights", "winograd6_forward", "sparse_exact_layer",
                    "winograd6_amx_forward", "amx_exact_layer"][p]
            values[("despeck", threads, f"{name}_gflops")].append(b["GFLOP/s"] / 1e9 if b["GFLOP/s"] > 1e6 else b["GFLOP/s"])
            values[("despeck", threads, "peak_gflops")].append(b["peak_GFLOP/s"])
    return values


def stat(values, key):
    v = values.get(key)
    if not v:
        return None
    return statistics.median(v), min(v), max(v), len(v)


def fmt(s, digits=1):
    if s is None:
        return "n/a"
    med, lo, hi, n = s
    return f"{med:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f}, n={n})"


def main():
    log = sys.argv[1]
    tile = sys.argv[2] if len(sys.argv) > 2 else "?"
    v = parse(log)
    rows = []

    def ratio_row(target_name, what, a_key, b_key, higher_is_better, target, digits=1):
        """target None: a row for reference, judged against nothing."""
        a, b = stat(v, a_key), stat(v, b_key)
        shown_target = f">= {target}x" if target is not None else "-"
        if a is None or b is None:
            rows.append((target_name, what, fmt(a, digits), fmt(b, digits), "n/a", "n/a", shown_target, "not measured"))
            return
        r = (a[0] / b[0]) if higher_is_better else (b[0] / a[0])
        # Conservative: despeck's median against the baseline's best round.
        c = (a[0] / b[2]) if higher_is_better else (b[1] / a[0])
        if target is None:
            verdict = "-"
        else:
            verdict = "met" if r >= target else "NOT met"
            if r >= target and c < target:
                verdict = "met on medians, not against the baseline's best round"
        rows.append((target_name, what, fmt(a, digits), fmt(b, digits), f"{r:.2f}x", f"{c:.2f}x", shown_target, verdict))

    for th in (2, 1):
        ratio_row("1", f"training step, ms, {th} thread(s) (despeck / PyTorch's best configuration)", ("despeck", th, "train_ms"),
                  ("pytorch", th, "train_ms"), False, 1.5)
        ratio_row("2", f"exact inference {tile}x{tile}x2, Mpx/s, {th} thread(s) (despeck / PyTorch's best configuration)",
                  ("despeck", th, "infer_exact_mpxs"), ("pytorch", th, "infer_exact_mpxs"), True, 1.25, 3)
        ratio_row("3", f"fast inference {tile}x{tile}x2, Mpx/s, {th} thread(s) (despeck / PyTorch's best configuration)",
                  ("despeck", th, "infer_fast_mpxs"), ("pytorch", th, "infer_exact_mpxs"), True, 3.0, 3)
        # The authors' trained model on real SAR (its ReLUs leave about 70% zeros, an untrained
        # model's about half): the workload despeckling runs. "not measured" when the runner skipped it.
        ratio_row("2", f"exact inference {tile}x{tile}x1, authors' pretrained model on real SAR, Mpx/s, {th} thread(s) "
                  "(despeck / PyTorch's best configuration)",
                  ("despeck_pretrained", th, "infer_exact_mpxs"), ("pytorch_pretrained", th, "infer_exact_mpxs"), True, 1.25, 3)
        ratio_row("3", f"fast inference {tile}x{tile}x1, authors' pretrained model on real SAR, Mpx/s, {th} thread(s) "
                  "(despeck / PyTorch's best configuration)",
                  ("despeck_pretrained", th, "infer_fast_mpxs"), ("pytorch_pretrained", th, "infer_exact_mpxs"), True, 3.0, 3)
        for p in ("forward", "backward_data", "backward_weights"):
            ratio_row("4", f"conv 3x3 64->64 {p}, GFLOP/s, {th} thread(s) (despeck / oneDNN direct NHWC)",
                      ("despeck", th, f"direct_{p}_gflops"), ("onednn", th, f"direct_{p}_gflops"), True, 0.85)
        for p in ("forward", "backward_data", "backward_weights"):
            ratio_row("4", f"conv 3x3 64->64 {p}, Winograd, effective GFLOP/s, {th} thread(s) (despeck NHWC / oneDNN blocked)",
                      ("despeck", th, f"winograd_{p}_gflops"), ("onednn_blocked", th, f"winograd_{p}_gflops"), True, 0.85)
        ratio_row("4", f"conv 3x3 64->64 forward, Winograd F(6x6) of fast inference, effective GFLOP/s, {th} thread(s) "
                  "(despeck NHWC / oneDNN blocked F(4x4))",
                  ("despeck", th, "winograd6_forward_gflops"), ("onednn_blocked", th, "winograd_forward_gflops"), True, 0.85)
        # For reference (CPUs with AMX): the same layer with the products on AMX as int8 slices, what
        # fast inference runs there; not exact to float rounding, so not judged against oneDNN's float.
        ratio_row("-", f"conv 3x3 64->64 forward, Winograd F(6x6) of fast inference with AMX int8 products, effective "
                  f"GFLOP/s, {th} thread(s) (despeck / the same with float products)",
                  ("despeck", th, "winograd6_amx_forward_gflops"), ("despeck", th, "winograd6_forward_gflops"), True, None)
        ratio_row("-", f"fast inference {tile}x{tile}x2, Mpx/s, {th} thread(s) (despeck / despeck with float products, "
                  "DESPECK_AMX=0)", ("despeck", th, "infer_fast_mpxs"), ("despeck_float_products", th, "infer_fast_mpxs"), True, None, 3)
        # For reference: the sparse-input kernel of exact inference against the dense one, on
        # bench_kernels' input with 70% zeros at random (the same floats come out of both).
        ratio_row("-", f"exact inference layer 256x256 64->64, GFLOP/s, {th} thread(s) (despeck sparse-input kernel, 70% zeros / "
                  "despeck dense kernel)", ("despeck", th, "sparse_exact_layer_gflops"), ("despeck", th, "fused_gflops"), True, None)
        # For reference (CPUs with AMX): the same layer on AMX in nine exact bf16 products per
        # float product, what exact inference runs there where the input is not sparse enough.
        ratio_row("-", f"exact inference layer 256x256 64->64, GFLOP/s, {th} thread(s) (despeck on AMX, nine exact bf16 "
                  "products / despeck dense kernel)", ("despeck", th, "amx_exact_layer_gflops"), ("despeck", th, "fused_gflops"), True, None)
    # For reference: the same PyTorch with the stock allocator (its page faults included).
    ratio_row("-", "training step, ms, 2 thread(s) (despeck / PyTorch with the stock allocator)",
              ("despeck", 2, "train_ms"), ("pytorch_stock", 2, "train_ms"), False, None)
    ratio_row("-", f"exact inference {tile}x{tile}x2, Mpx/s, 2 thread(s) (despeck / PyTorch with the stock allocator)",
              ("despeck", 2, "infer_exact_mpxs"), ("pytorch_stock", 2, "infer_exact_mpxs"), True, None, 3)
    ratio_row("5", "training peak resident memory, MiB (despeck / PyTorch, stock allocator)", ("despeck_train", 2, "peak_rss_mib"),
              ("pytorch_train", 2, "peak_rss_mib"), False, 1.0, 0)
    ratio_row("5", f"inference peak resident memory {tile}x{tile}, MiB (despeck / PyTorch, stock allocator)",
              ("despeck_infer", 2, "peak_rss_mib"), ("pytorch_infer", 2, "peak_rss_mib"), False, 1.0, 0)
    for label, key, what in (("despeck", "train_ms", "training step"), ("despeck", "infer_exact_mpxs", "exact inference"),
                             ("despeck", "infer_fast_mpxs", "fast inference"),
                             ("despeck_pretrained", "infer_exact_mpxs", "exact inference, pretrained model"),
                             ("despeck", "direct_forward_gflops", "conv forward, direct"),
                             ("despeck", "direct_backward_weights_gflops", "conv backward-weights, direct"),
                             ("despeck", "winograd_backward_weights_gflops", "conv backward-weights, Winograd")):
        one, two = stat(v, (label, 1, key)), stat(v, (label, 2, key))
        if one and two:
            r = one[0] / two[0] if key == "train_ms" else two[0] / one[0]
            d = 3 if key.endswith("mpxs") else 1
            rows.append(("6", f"{what}: 2 threads over 1 (despeck)", fmt(two, d), fmt(one, d), f"{r:.2f}x", "-",
                         ">= 1.8x", "met" if r >= 1.8 else "NOT met"))
    peak = stat(v, ("despeck", 2, "peak_gflops"))
    print(f"Measured FP32 peak (FMA loop, 2 threads): {fmt(peak)} GFLOP/s\n")
    print("| target | measurement | despeck median (min-max) | baseline median (min-max) | ratio of medians | "
          "ratio against the baseline's best round | target | |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
