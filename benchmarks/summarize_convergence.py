"""Gaps between training runs over many draws (convergence_parity --floor outputs) and an exact
Mann-Whitney rank test: are the default's gaps to exact training larger than the gaps between two
exact fp32 runs that differ only in summation order?
    python3 benchmarks/summarize_convergence.py build/benchmarks/convergence/seed_*.txt
Standard library only (the test enumerates all splits, fine up to about 12 draws per side)."""
import itertools
import re
import statistics
import sys

GAP = re.compile(r"of 50-step means ([0-9.]+)%; mean of the second half ([0-9.]+)%")


def parse(path):
    seed = re.search(r"seed (\d+)", open(path).read())
    default = floor = None
    for line in open(path):
        m = GAP.search(line)
        if not m:
            continue
        gaps = (float(m.group(1)), float(m.group(2)))
        if line.startswith("b vs a"):
            default = gaps
        elif line.startswith("floor"):
            floor = gaps
    if default is None or floor is None:
        sys.exit(f"{path}: no 'b vs a' and 'floor' gap lines (run convergence_parity with --floor)")
    return int(seed.group(1)) if seed else -1, default, floor


def mann_whitney_greater(a, b):
    """U of a over b and the exact one-sided p of P(U >= observed) under exchangeability."""
    def u(x, y):
        return sum((p > q) + 0.5 * (p == q) for p in x for q in y)
    both = a + b
    observed = u(a, b)
    splits = list(itertools.combinations(range(len(both)), len(a)))
    count = 0
    for idx in splits:
        chosen = set(idx)
        if u([both[i] for i in idx], [both[i] for i in range(len(both)) if i not in chosen]) >= observed:
            count += 1
    return observed, count / len(splits)


def main():
    draws = sorted(parse(p) for p in sys.argv[1:])
    if len(draws) < 2:
        sys.exit("need at least two draws")
    print("| seed | default vs exact: 50-step means | second half | exact vs exact: 50-step means | second half |")
    print("|---|---|---|---|---|")
    for seed, d, f in draws:
        print(f"| {seed} | {d[0]:.2f}% | {d[1]:.2f}% | {f[0]:.2f}% | {f[1]:.2f}% |")
    for k, name in ((0, "max gap of 50-step means"), (1, "mean of the second half")):
        d = [x[1][k] for x in draws]
        f = [x[2][k] for x in draws]
        u, p = mann_whitney_greater(d, f)
        print(f"\n{name}: default median {statistics.median(d):.2f}% (range {min(d):.2f}-{max(d):.2f}), "
              f"exact pair median {statistics.median(f):.2f}% (range {min(f):.2f}-{max(f):.2f}); "
              f"Mann-Whitney U = {u:g} of {len(d) * len(f)}, one-sided p = {p:.3f} "
              f"(small p: the default moves training more than summation order does)")


if __name__ == "__main__":
    main()
