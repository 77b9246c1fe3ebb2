#!/usr/bin/env python3
"""The chart of a comparison run: one bar per judged row of summarize_comparison.py's table.

    python3 benchmarks/chart_comparison.py <table.md> <chart.svg> [title]

Each bar is despeck's ratio over its baseline (ratio of medians; higher is better for every row,
as the table orients them), with a tick at the ratio against the baseline's best round and a
vertical line at the row's target. Green: met; amber: met on medians only; red: not met. Rows
the table marks "not measured" are listed without a bar. Plain SVG from the standard library, so
the runner needs nothing beyond python3.
"""
import sys
from xml.sax.saxutils import escape

ROW_H = 20
LABEL_W = 430
PLOT_W = 380
RIGHT_W = 70
TOP = 48
COLOURS = {"met": "#3a8f3a", "medians": "#d99a1c", "not": "#c23b22", "none": "#999999"}


def short(what):
    """The table's measurement without its units, which the bars do not show anyway."""
    for unit in (", effective GFLOP/s", ", GFLOP/s", ", Mpx/s", ", ms", ", MiB"):
        what = what.replace(unit, "")
    return what.replace("authors' pretrained model on real SAR", "pretrained model, real SAR").replace(" thread(s)", " thr.")


def judged_rows(table_path):
    """(label, ratio, ratio against the best round, target, verdict) for rows with a target."""
    rows = []
    for line in open(table_path, encoding="utf-8"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 8 or not cells[6].startswith(">="):
            continue
        target_no, what, _, _, ratio, best, target, verdict = cells
        label = f"{target_no}: " + short(what.split(" (despeck")[0])
        parse = lambda s: float(s.rstrip("x")) if s.endswith("x") else None
        rows.append((label, parse(ratio), parse(best), float(target.split()[1].rstrip("x")), verdict))
    return rows


def colour(verdict):
    if verdict == "met":
        return COLOURS["met"]
    if verdict.startswith("met on medians"):
        return COLOURS["medians"]
    if verdict == "NOT met":
        return COLOURS["not"]
    return COLOURS["none"]


def svg(rows, title):
    x_max = max([r[1] or 0 for r in rows] + [r[3] for r in rows] + [1.0]) * 1.08
    x_of = lambda v: LABEL_W + PLOT_W * v / x_max
    height = TOP + ROW_H * len(rows) + 40
    width = LABEL_W + PLOT_W + RIGHT_W
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="8" y="18" font-size="13" font-weight="bold">{escape(title)}</text>',
           f'<text x="8" y="36" fill="#444">despeck over the baseline (ratio of medians; tick: against the '
           f'baseline\'s best round; line: target). Green met, amber met on medians only, red not met.</text>']
    # Grid at every 0.5x.
    step, v = 0.5, 0.0
    while v <= x_max:
        x = x_of(v)
        out.append(f'<line x1="{x:.1f}" y1="{TOP - 4}" x2="{x:.1f}" y2="{TOP + ROW_H * len(rows)}" stroke="#e4e4e4"/>')
        out.append(f'<text x="{x:.1f}" y="{TOP + ROW_H * len(rows) + 14}" text-anchor="middle" fill="#666">{v:g}x</text>')
        v += step
    for i, (label, ratio, best, target, verdict) in enumerate(rows):
        y = TOP + i * ROW_H
        out.append(f'<text x="{LABEL_W - 6}" y="{y + 13}" text-anchor="end">{escape(label)}</text>')
        if ratio is not None:
            out.append(f'<rect x="{LABEL_W}" y="{y + 3}" width="{x_of(ratio) - LABEL_W:.1f}" height="{ROW_H - 6}" '
                       f'fill="{colour(verdict)}"/>')
            out.append(f'<text x="{x_of(ratio) + 4:.1f}" y="{y + 13}">{ratio:.2f}x</text>')
        else:
            out.append(f'<text x="{LABEL_W + 4}" y="{y + 13}" fill="#666">not measured</text>')
        if best is not None:
            out.append(f'<line x1="{x_of(best):.1f}" y1="{y + 1}" x2="{x_of(best):.1f}" y2="{y + ROW_H - 1}" '
                       f'stroke="black" stroke-width="2"/>')
        out.append(f'<line x1="{x_of(target):.1f}" y1="{y}" x2="{x_of(target):.1f}" y2="{y + ROW_H}" '
                   f'stroke="#222" stroke-dasharray="3,2"/>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: chart_comparison.py <table.md> <chart.svg> [title]")
    rows = judged_rows(sys.argv[1])
    if not rows:
        sys.exit(f"chart_comparison.py: no judged rows (a '>= Nx' target column) in {sys.argv[1]}")
    title = sys.argv[3] if len(sys.argv) > 3 else "despeck against PyTorch and oneDNN"
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        f.write(svg(rows, title))


if __name__ == "__main__":
    main()
