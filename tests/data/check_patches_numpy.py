#!/usr/bin/env python3
"""Checks despeck patch datasets with NumPy alone (not part of CI; run by hand).

    python3 tests/data/check_patches_numpy.py [--formula] DIR [DIR ...]

DIR is a dataset directory (with manifest.json) or a folder holding them (train/, validation/, ...).
Each dataset must load with numpy.load(allow_pickle=False) as C-ordered little-endian float32 with
the shapes manifest.json gives. Masks must hold only 0 and 1, and positions must lie in the scene
and in bands of the dataset's split. With --formula, the values must also match the synthetic scene
that tests/data/test_patches.cpp writes ("numpy demo" case):
    input(r, c, b) = 1000 r + c + 0.25 b,  reference = -input,  mask(r, c) = (7 r + 3 c) % 5 != 0
Exits 1 on the first failure.
"""
import json
import pathlib
import sys

import numpy as np


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def check(ok, msg):
    if not ok:
        fail(msg)


def check_dataset(d, formula):
    m = json.loads((d / "manifest.json").read_text())
    check(m["format"] == "despeck-patches" and m["version"] == 1, f"{d}: format/version {m['format']} {m['version']}")
    n, s, b = m["count"], m["patch_size"], m["bands"]
    check(m["units"] == "db", f"{d}: units {m['units']}")
    check(len(m["band_names"]) in (0, b), f"{d}: band names {m['band_names']}")
    check(m["counts"][m["split"]] == n, f"{d}: counts {m['counts']} vs count {n}")
    pos = np.asarray(m["positions"], dtype=np.int64).reshape(-1, 2)
    check(len(pos) == n, f"{d}: {len(pos)} positions for {n} patches")
    arrays = {}
    for key, spec in m["arrays"].items():
        a = np.load(d / spec["file"], allow_pickle=False)
        check(a.dtype == np.dtype("<f4"), f"{d}/{spec['file']}: dtype {a.dtype}")
        check(a.flags["C_CONTIGUOUS"], f"{d}/{spec['file']}: not C order")
        check(list(a.shape) == spec["shape"], f"{d}/{spec['file']}: shape {a.shape} vs manifest {spec['shape']}")
        check(np.isfinite(a).all(), f"{d}/{spec['file']}: non-finite values")
        arrays[key] = a
    check(arrays["input"].shape == (n, s, s, b), f"{d}: input {arrays['input'].shape} vs {(n, s, s, b)}")
    if "reference" in arrays:
        check(arrays["reference"].shape == arrays["input"].shape, f"{d}: reference/input shapes differ")
    if "mask" in arrays:
        check(arrays["mask"].shape == (n, s, s, 1), f"{d}: mask shape {arrays['mask'].shape}")
        check(np.isin(arrays["mask"], (0.0, 1.0)).all(), f"{d}: mask values other than 0/1")
    lay = m["split_layout"]
    rows, cols = lay["scene_rows"], lay["scene_cols"]
    check(((pos >= 0).all() and (pos[:, 0] + s <= rows).all() and (pos[:, 1] + s <= cols).all()) if n else True,
          f"{d}: a position leaves the {rows} x {cols} scene")
    own = np.zeros(rows, dtype=bool)
    for band in lay["bands"]:
        if band["split"] == m["split"]:
            own[band["rows"][0]:band["rows"][1]] = True
    for r, _ in pos:
        check(own[r:r + s].all(), f"{d}: patch at row {r} leaves the {m['split']} bands")
    if formula and n:
        rr = pos[:, 0, None, None] + np.arange(s)[None, :, None]  # [n, s, 1]
        cc = pos[:, 1, None, None] + np.arange(s)[None, None, :]  # [n, 1, s]
        base = (1000 * rr + cc).astype(np.float32)[..., None] + 0.25 * np.arange(b, dtype=np.float32)
        check(np.array_equal(arrays["input"], base), f"{d}: input values differ from the formula")
        if "reference" in arrays:
            check(np.array_equal(arrays["reference"], -base), f"{d}: reference values differ from the formula")
        if "mask" in arrays:
            expect = ((7 * rr + 3 * cc) % 5 != 0).astype(np.float32)[..., None]
            check(np.array_equal(arrays["mask"], expect), f"{d}: mask values differ from the formula")
    print(f"ok  {d}: split={m['split']} mode={m['mode']} N={n} size={s} bands={b} "
          f"arrays={sorted(arrays)} numpy={np.__version__}")


def main(argv):
    formula = "--formula" in argv
    dirs = [pathlib.Path(a) for a in argv if a != "--formula"]
    if not dirs:
        fail(__doc__)
    found = 0
    for root in dirs:
        for manifest in sorted([root / "manifest.json"] if (root / "manifest.json").exists()
                               else root.rglob("manifest.json")):
            check_dataset(manifest.parent, formula)
            found += 1
    check(found > 0, f"no manifest.json under {' '.join(map(str, dirs))}")
    print(f"all {found} dataset(s) ok")


if __name__ == "__main__":
    main(sys.argv[1:])
