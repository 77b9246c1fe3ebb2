#!/usr/bin/env python3
"""Independent check of a dataset prepared from the GeoTIFF stack fixtures (run by ctest after
test_prepare, which writes it).

    python3 tests/data/check_prepared_numpy.py OUT_DIR GEOTIFF_FIXTURE_DIR

GDAL (gdal_translate, from gdal-bin) decodes every GeoTIFF to raw float32; NumPy alone then
recomputes the temporal reference: per pixel and band, the median and the population std-dev in
dB over the dates where both bands are valid (linear files: value > 0 and not the no-data value;
the dB file: not -9999), and the stable mask (at least 2 valid dates, std <= 2 dB in both bands).
It compares them with despeck's reference_median_db.tif and stable_mask.tif, and checks that the
patches in OUT_DIR/train and OUT_DIR/validation load with numpy.load as float32 arrays of the
manifest's shapes and hold the reference and mask at the manifest's positions. Nothing here uses
despeck's code. Exits 1 on the first failure.
"""
import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

STACK = [
    "s1_stack_d1_20240105_strip_raw.tif", "s1_stack_d2_20240117_tile256_deflate.tif",
    "s1_stack_d3_20240129_tile256_lzw_pred3.tif", "s1_stack_d4_20240210_bandinterleave_deflate.tif",
    "s1_stack_d5_20240222_bigtiff.tif", "s1_stack_d6_20240305_dB.tif",
    "s1_stack_d7_20240317_bigendian_lzw.tif", "s1_stack_d8_20240329_cog.tif",
]


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def read_with_gdal(path, tmp):
    """[bands, rows, cols] float32 via gdal_translate to ENVI (band-sequential raw)."""
    info = json.loads(subprocess.run(["gdalinfo", "-json", str(path)], check=True, capture_output=True, text=True).stdout)
    cols, rows = info["size"]
    bands = len(info["bands"])
    raw = pathlib.Path(tmp) / (pathlib.Path(path).stem + ".raw")
    subprocess.run(["gdal_translate", "-q", "-of", "ENVI", "-co", "INTERLEAVE=BSQ", "-ot", "Float32", str(path), str(raw)],
                   check=True)
    data = np.fromfile(raw, dtype="<f4").reshape(bands, rows, cols)
    nodata = info["bands"][0].get("noDataValue")
    units = info.get("metadata", {}).get("", {}).get("UNITS", "")
    return data, nodata, units


def main():
    out, fixtures = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    with tempfile.TemporaryDirectory() as tmp:
        dbs, valids = [], []
        for name in STACK:
            data, nodata, units = read_with_gdal(fixtures / name, tmp)
            data = data.astype(np.float64)
            is_db = "db" in units.lower()
            ok = np.isfinite(data) & (data != nodata) & (True if is_db else data > 0)
            with np.errstate(divide="ignore", invalid="ignore"):
                db = data if is_db else 10 * np.log10(data)
            valid_date = ok.all(axis=0)  # both bands valid
            dbs.append(np.where(valid_date, db, np.nan))
            valids.append(valid_date)
        stack = np.stack(dbs)  # [dates, bands, rows, cols]
        count = np.stack(valids).sum(axis=0)
        with np.errstate(all="ignore"):
            import warnings
            warnings.simplefilter("ignore")
            median = np.nanmedian(stack, axis=0)
            std = np.nanstd(stack, axis=0)
        stable = (count >= 2) & (std <= 2.0).all(axis=0)

        ours, _, _ = read_with_gdal(out / "reference_median_db.tif", tmp)
        ours_mask, _, _ = read_with_gdal(out / "stable_mask.tif", tmp)
    both = np.isfinite(median)
    if not np.array_equal(both, np.isfinite(ours)):
        fail("the pixels with a median differ from NumPy's")
    err = np.abs(ours[both] - median[both]).max()
    if err > 1e-4:
        fail(f"median differs from NumPy's by up to {err} dB")
    # A pixel whose std sits within float rounding of the threshold may legitimately differ.
    borderline = (np.abs(std - 2.0) < 1e-4).any(axis=0)
    diff = (ours_mask[0] == 1) != stable
    if (diff & ~borderline).any():
        fail(f"stable mask differs from NumPy's at {(diff & ~borderline).sum()} pixels")
    print(f"reference: median max |error| {err:.2e} dB; stable {int(stable.sum())} of {stable.size} pixels; "
          f"mask equal (borderline pixels: {int((diff & borderline).sum())})")

    rows, cols = median.shape[1:]
    for split in ("train", "validation"):
        d = out / split
        m = json.loads((d / "manifest.json").read_text())
        n, s, b = m["count"], m["patch_size"], m["bands"]
        arrays = {k: np.load(d / f"{k}.npy", allow_pickle=False) for k in ("input", "reference", "mask")}
        for k, a in arrays.items():
            want = (n, s, s, 1 if k == "mask" else b)
            if a.dtype != np.float32 or a.shape != want:
                fail(f"{d}/{k}.npy is {a.dtype} {a.shape}, expected float32 {want}")
        pos = np.asarray(m["positions"], dtype=np.int64).reshape(-1, 2)
        for k, (r, c) in enumerate(pos):
            if not (0 <= r <= rows - s and 0 <= c <= cols - s):
                fail(f"{d}: position {r},{c} outside the scene")
            ref = median[:, r:r + s, c:c + s].transpose(1, 2, 0)
            if np.abs(arrays["reference"][k] - ref).max() > 1e-4:
                fail(f"{d}: reference patch {k} at {r},{c} differs from NumPy's median")
            if not np.array_equal(arrays["mask"][k, :, :, 0] == 1, stable[r:r + s, c:c + s]) and \
                    not borderline[r:r + s, c:c + s].any():
                fail(f"{d}: mask patch {k} at {r},{c} differs")
            if not np.isfinite(arrays["input"][k]).all():
                fail(f"{d}: input patch {k} holds NaN or inf")
        print(f"{split}: {n} patches of {s}x{s}x{b}, reference and mask agree with NumPy")
    print("1 passed, 0 failed")


if __name__ == "__main__":
    main()
