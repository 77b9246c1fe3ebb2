#!/usr/bin/env python3
"""The comparison runner's summary and chart on a small made-up log with known answers.

    python3 check_comparison_scripts.py <benchmarks dir>

compare_all.sh takes half an hour, so CI never runs it; this checks the two scripts at its end:
the table's ratios and verdicts, a kernel benchmark that this CPU skipped (an error entry, as on
a CPU without AVX-512), and one SVG bar per measured, judged row. Standard library only.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import xml.dom.minidom


def kernels_block(threads, fwd_gflops, skipped):
    """Google Benchmark JSON as compare_all.sh logs it: medians of the direct forward, plus an
    error entry for an instruction set the CPU lacks when skipped."""
    benchmarks = [{"name": "BM_conv/pass:0/isa:1/N:16/H:40/W:40/Ci:64/Co:64/real_time_median", "run_type": "aggregate",
                   "aggregate_name": "median", "GFLOP/s": fwd_gflops, "peak_GFLOP/s": 200.0},
                  {"name": "BM_conv/pass:0/isa:1/N:16/H:40/W:40/Ci:64/Co:64/real_time_mean", "run_type": "aggregate",
                   "aggregate_name": "mean", "GFLOP/s": 1.0, "peak_GFLOP/s": 1.0}]
    if skipped:
        benchmarks.append({"name": "BM_conv/pass:7/isa:2/N:1/H:256/W:256/Ci:64/Co:64/real_time", "run_type": "iteration",
                           "error_occurred": True, "error_message": "this CPU lacks the instruction set"})
    text = json.dumps({"context": {"fp32_peak_gflops": "200"}, "benchmarks": benchmarks}, indent=1)
    return [f"kernels threads={threads} | {line}" for line in text.splitlines()]


def make_log(path):
    lines = []
    for r in range(3):
        lines.append(f"== round {r + 1}")
        for th, scale in ((2, 1.0), (1, 0.5)):
            # despeck: training 2x PyTorch's speed, exact 1.5x, fast 2.5x (target 3 not met).
            lines.append(f"despeck threads={th} | training step (batch 16 of 40x40x2): {300 / scale:.1f} ms  (x)")
            lines.append(f"despeck threads={th} | clean-branch inference (exact) 64x64x2: 1 s  ({0.30 * scale:.3f} Mpx/s)")
            lines.append(f"despeck threads={th} | clean-branch inference (fast) 64x64x2: 1 s  ({0.50 * scale:.3f} Mpx/s)")
            lines.append(f"pytorch threads={th} | training step (best: nhwc): {600 / scale:.1f} ms  (x)")
            # PyTorch's third round at 2 threads is fast: exact 1.5x on medians, 1.15x against that round.
            py_infer = 0.26 if (th == 2 and r == 2) else 0.20 * scale
            lines.append(f"pytorch threads={th} | clean-branch inference (best: frozen nhwc) 64x64x2: 1 s  "
                         f"({py_infer:.3f} Mpx/s)")
            onednn = {"pass": "forward", "algorithm": "direct", "gflops": 100.0 * scale, "status": "ok"}
            lines.append(f"onednn threads={th} | {json.dumps(onednn)}")
            lines += kernels_block(th, 90.0 * scale, skipped=True)
        lines.append("despeck_train threads=2 | peak_rss_kib 409600")
        lines.append("pytorch_train threads=2 | peak_rss_kib 819200")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def row(table, prefix):
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 8 and cells[1].startswith(prefix):
            return cells
    raise AssertionError(f"no row starting {prefix!r} in the table:\n{table}")


def main():
    bench_dir = sys.argv[1]
    failures = []

    def check(cond, what):
        if not cond:
            failures.append(what)

    with tempfile.TemporaryDirectory() as tmp:
        log, table_path, chart_path = (os.path.join(tmp, n) for n in ("log.txt", "table.md", "chart.svg"))
        make_log(log)
        table = subprocess.run([sys.executable, os.path.join(bench_dir, "summarize_comparison.py"), log, "64"],
                               check=True, capture_output=True, text=True).stdout
        with open(table_path, "w", encoding="utf-8") as f:
            f.write(table)
        train = row(table, "training step, ms, 2 thread(s)")
        check(train[4] == "2.00x" and train[7] == "met", f"training row {train}")
        exact = row(table, "exact inference 64x64x2, Mpx/s, 1 thread(s)")
        check(exact[4] == "1.50x" and exact[7] == "met", f"exact row {exact}")
        exact2 = row(table, "exact inference 64x64x2, Mpx/s, 2 thread(s)")
        check(exact2[4] == "1.50x" and exact2[5] == "1.15x" and exact2[7].startswith("met on medians"),
              f"exact row at 2 threads, PyTorch's best round above its median: {exact2}")
        fast = row(table, "fast inference 64x64x2, Mpx/s, 2 thread(s)")
        check(fast[4] == "2.50x" and fast[7] == "NOT met", f"fast row {fast}")
        fwd = row(table, "conv 3x3 64->64 forward, GFLOP/s, 2 thread(s)")
        check(fwd[2].startswith("90.0") and fwd[4] == "0.90x" and fwd[7] == "met", f"direct forward row {fwd} (the mean must not count)")
        skipped = row(table, "conv 3x3 64->64 forward, Winograd F(6x6)")
        check(skipped[7] == "not measured", f"a skipped kernel benchmark must leave its row not measured: {skipped}")
        memory = row(table, "training peak resident memory")
        check(memory[4] == "2.00x" and memory[7] == "met", f"memory row {memory}")
        scaling = row(table, "training step: 2 threads over 1")
        check(scaling[4] == "2.00x" and scaling[7] == "met", f"scaling row {scaling}")

        subprocess.run([sys.executable, os.path.join(bench_dir, "chart_comparison.py"), table_path, chart_path, "test"],
                       check=True)
        doc = xml.dom.minidom.parse(chart_path)
        judged = [l for l in table.splitlines() if re.search(r"\| >= [\d.]+x \|", l)]
        measured = [l for l in judged if "not measured" not in l]
        bars = [r for r in doc.getElementsByTagName("rect") if r.getAttribute("fill") != "white"]
        check(len(bars) == len(measured), f"{len(bars)} bars for {len(measured)} measured judged rows")
        # Bars in the table's order: green where met, amber on medians only, red where not.
        expected = ["#3a8f3a" if l.rstrip().endswith("| met |") else "#c23b22" if "NOT met" in l
                    else "#d99a1c" if "met on medians" in l else "?" for l in measured]
        check([b.getAttribute("fill") for b in bars] == expected, "bar colours follow the verdicts")
        texts = [t.firstChild.data for t in doc.getElementsByTagName("text") if t.firstChild]
        check(texts.count("not measured") == len(judged) - len(measured), "each unmeasured row is labelled so")
        check(any(t.startswith("3: fast inference 64x64x2") for t in texts), "row labels carry the target number")

    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("comparison scripts: table and chart as expected")


if __name__ == "__main__":
    main()
