#!/usr/bin/env python3
"""Converts the authors' pretrained deSpeckNet (MatConvNet DagNN, ../shared/data/pretrained) into a
despeck checkpoint, so that benchmarks can time exact inference on a trained model and real SAR:
a trained network's ReLUs leave about 70% of its activations at zero, which the sparse-input
kernel skips, where an untrained one leaves about half.

    /usr/bin/python3 benchmarks/matconvnet_to_checkpoint.py \\
        ../shared/data/pretrained/deSpeckNet-epoch-30.mat /tmp/despecknet_pretrained.safetensors

Needs python3-scipy (scipy.io.loadmat reads the MAT v5 file). The model is single-channel linear
intensity with the multiplicative combine (clean * noise), 17 convs per branch.

The mapping, from ../shared/data/pretrained/README.md:
  - convN_f [3,3,Cin,Cout] (rows, columns, in, out; cross-correlation) is despeck's [K,K,ci,co]
    as it is. MATLAB drops the trailing singleton of the last convs (3x3x64) and squeeze_me the
    leading one of the first (3x3x64): both are put back.
  - bnormN_m holds the mean and sigma = sqrt(var + eps) in test mode, where MatConvNet adds no
    epsilon. despeck computes gamma / sqrt(running_var + bn_eps), so running_var = sigma^2 - bn_eps
    with bn_eps = 1e-8 (the smallest sigma^2 is 8e-5): the same scale to float precision.
"""
import json
import struct
import sys

import numpy as np
import scipy.io

BN_EPS = 1e-8


def main():
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} MODEL.mat OUT.safetensors")
    src, dst = sys.argv[1], sys.argv[2]
    net = scipy.io.loadmat(src, squeeze_me=True, struct_as_record=False)["net"]
    params = {p.name: np.asarray(p.value, dtype=np.float32) for p in net.params}
    # Convs and batch norms of each branch in graph order: 'prediction' (clean) comes from conv48,
    # the noise branch runs conv49 .. conv96.
    convs = sorted((int(l.name[4:]), l.name) for l in net.layers if l.type == "dagnn.Conv")
    bnorms = sorted((int(l.name[5:]), l.name) for l in net.layers if l.type == "dagnn.BatchNorm")
    branches = {"clean": [c for c in convs if c[0] <= 48], "noise": [c for c in convs if c[0] > 48]}
    norms = {"clean": [b for b in bnorms if b[0] <= 48], "noise": [b for b in bnorms if b[0] > 48]}
    tensors = {}
    for branch, layers in branches.items():
        if len(layers) != 17 or len(norms[branch]) != 15:
            sys.exit(f"{src}: the {branch} branch has {len(layers)} convs and {len(norms[branch])} batch norms, not 17 and 15")
        for i, (_, name) in enumerate(layers):
            cin, cout = (1 if i == 0 else 64), (1 if i == 16 else 64)
            w = params[name + "_f"].reshape(3, 3, cin, cout)  # index-preserving: only singleton axes return
            tensors[f"{branch}.conv{i}.weight"] = w
            tensors[f"{branch}.conv{i}.bias"] = params[name + "_b"].reshape(cout)
        for i, (_, name) in enumerate(norms[branch], start=1):
            moments = params[name + "_m"].reshape(64, 2)
            sigma = moments[:, 1].astype(np.float64)
            if not (sigma ** 2 > 10 * BN_EPS).all():
                sys.exit(f"{src}: {name} has a sigma below {np.sqrt(10 * BN_EPS)}")
            tensors[f"{branch}.bn{i}.weight"] = params[name + "_g"].reshape(64)
            tensors[f"{branch}.bn{i}.bias"] = params[name + "_b"].reshape(64)
            tensors[f"{branch}.bn{i}.running_mean"] = moments[:, 0].copy()
            tensors[f"{branch}.bn{i}.running_var"] = (sigma ** 2 - BN_EPS).astype(np.float32)
    config = {"depth": 17, "filters": 64, "channels": 1, "kernel": 3, "combine": "multiplicative_linear",
              "bn_eps": BN_EPS}
    header = {"__metadata__": {"format": "despeck-checkpoint", "format_version": "1",
                               "despeck_version": "converted from MatConvNet", "config": json.dumps(config),
                               "source": src}}
    offset, blobs = 0, []
    for name, t in tensors.items():
        data = np.ascontiguousarray(t, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    print(f"{dst}: {len(tensors)} tensors from {src}")


if __name__ == "__main__":
    main()
