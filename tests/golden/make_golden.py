#!/usr/bin/python3
"""Golden reference data for deSpeckNet, computed with PyTorch in float64.

What this makes
    tests/golden/despecknet_golden_v1.safetensors, read by tests/golden/test_golden.cpp, which
    checks the C++ model (despeck::DeSpeckNet<double> and <float>) against it: losses, every
    parameter gradient, both branch outputs, and the losses of 5 Adam steps (in the style of
    llm.c's test_gpt2.c).

How it was made / how to regenerate it
    /usr/bin/python3 tests/golden/make_golden.py          (from the repository root)

    Needs PyTorch (made with torch 1.13, CPU) and numpy. The output is deterministic: data and
    weights come from fixed numpy seeds, torch runs in float64 on one thread, and the file is
    written byte for byte by this script (no safetensors package). The file is committed, so the
    C++ test suite and CI never need Python or PyTorch; regenerate only when the semantics below
    change (then bump the "version" metadata and the file name).

Independence
    This is a from-scratch PyTorch implementation of deSpeckNet. It imports nothing from the C++
    project; only the semantics are shared:
      * tensors are NHWC [N,H,W,C] in the file; torch works in NCHW internally;
      * conv weights are stored HWIO [K,K,Cin,Cout]; torch's weight is w.permute(3,2,0,1);
        stride 1, zero padding K//2, cross-correlation, a bias on every conv;
      * two branches "clean" and "noise", each: conv0 (C->F) + ReLU; for i in 1..depth-2:
        conv_i (F->F) + BatchNorm (training mode: batch statistics, biased variance, eps 1e-4,
        affine) + ReLU; conv_{depth-1} (F->C), no ReLU;
      * rebuilt = clean + noise ("additive_db") or clean * noise ("multiplicative_linear");
      * mse(a, b, m) = sum_{n,h,w,c} m[n,h,w] (a - b)^2 / (N*H*W*C)  ("element_count"),
        mask [N,H,W,1] broadcast over channels;
      * tv = anisotropic L1 total variation of clean, summed over batch and channels
        (= tf.reduce_sum(tf.image.total_variation(clean)));
      * total = clean_weight * mse(clean, reference, mask)
              + reconstruction_weight * mse(rebuilt, input, mask) + tv_weight * tv;
      * torch.optim.Adam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8), 5 steps on the same batch.

Contents (all F64), for each case "<case>" in additive_db, multiplicative_linear, additive_db_tv:
    <case>/input [N,H,W,C], <case>/reference [N,H,W,C], <case>/mask [N,H,W,1]
    <case>/param/<name>   the initial parameters, names as in the C++ model:
                          "<branch>.conv<i>.weight" [K,K,Cin,Cout], "<branch>.conv<i>.bias" [Cout],
                          "<branch>.bn<i>.weight" [F], "<branch>.bn<i>.bias" [F]
    <case>/grad/<name>    d(total)/d(parameter) at the initial parameters
    <case>/clean, <case>/noise   the branch outputs [N,H,W,C] of the first forward pass
    <case>/losses [5,4]   rows: Adam step 0..4, each the losses of that step's forward pass
                          (before its update); columns: clean, recon, tv, total. The tv column
                          is 0 when tv_weight is 0 (the term is not part of the loss then, as
                          despeck::Losses reports it).
    __metadata__: format "despeck-golden", version "1", generator, torch_version and
                  "<case>/config" (a JSON string: depth, filters, channels, kernel, combine,
                  bn_eps, clean_weight, reconstruction_weight, tv_weight, lr, steps).
"""

import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
torch.set_num_threads(1)  # bit-for-bit reproducible reductions

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "despecknet_golden_v1.safetensors")

BRANCHES = ("clean", "noise")


# ---- the model ----------------------------------------------------------------------------------

def param_specs(cfg):
    """(name, shape) in the C++ model's parameter order."""
    K, F_, C, depth = cfg["kernel"], cfg["filters"], cfg["channels"], cfg["depth"]
    specs = []
    for b in BRANCHES:
        for i in range(depth):
            cin = C if i == 0 else F_
            cout = C if i == depth - 1 else F_
            specs.append((f"{b}.conv{i}.weight", (K, K, cin, cout)))
            specs.append((f"{b}.conv{i}.bias", (cout,)))
            if 0 < i < depth - 1:
                specs.append((f"{b}.bn{i}.weight", (F_,)))
                specs.append((f"{b}.bn{i}.bias", (F_,)))
    return specs


def init_params(cfg, rng, x_nhwc):
    """Random but well-scaled weights, so that no gradient is trivially zero (except the conv
    biases just before a training-mode batch norm, which the normalisation removes exactly).
    Glorot-normal conv weights; the first conv's bias is set from the batch, b = -mean(z) +
    0.25 std(z) normal, z = conv(x, w) per filter, so that no first-layer ReLU unit is dead on
    the whole batch (dB inputs sit near -12, which would otherwise kill every filter with a
    positive weight sum and leave exactly-zero gradients that compare trivially)."""
    params = {}
    x_nchw = torch.tensor(x_nhwc).permute(0, 3, 1, 2)
    for name, shape in param_specs(cfg):
        if name.endswith(".weight") and ".conv" in name:
            K, _, cin, cout = shape
            std = np.sqrt(2.0 / (K * K * cin + K * K * cout))  # glorot normal
            v = std * rng.standard_normal(shape)
            if name.endswith(".conv0.weight"):
                first_layer_w = v
        elif name.endswith(".conv0.bias"):
            z = F.conv2d(x_nchw, torch.tensor(first_layer_w).permute(3, 2, 0, 1).contiguous(),
                         padding=cfg["kernel"] // 2).numpy()
            v = -z.mean(axis=(0, 2, 3)) + 0.25 * z.std(axis=(0, 2, 3)) * rng.standard_normal(shape)
        elif ".bn" in name and name.endswith(".weight"):
            v = 1.0 + 0.1 * rng.standard_normal(shape)
        else:  # conv bias, bn bias
            v = 0.1 * rng.standard_normal(shape)
        params[name] = torch.tensor(v, dtype=torch.float64, requires_grad=True)
    return params


def branch(cfg, params, b, x_nchw):
    depth, pad = cfg["depth"], cfg["kernel"] // 2
    h = x_nchw
    for i in range(depth):
        w = params[f"{b}.conv{i}.weight"].permute(3, 2, 0, 1).contiguous()  # HWIO -> OIHW
        h = F.conv2d(h, w, params[f"{b}.conv{i}.bias"], stride=1, padding=pad)
        if 0 < i < depth - 1:
            h = F.batch_norm(h, None, None, params[f"{b}.bn{i}.weight"], params[f"{b}.bn{i}.bias"],
                             training=True, momentum=0.0, eps=cfg["bn_eps"])
        if i < depth - 1:
            h = F.relu(h)
    return h


def masked_mse(a, b, m):
    """a, b [N,C,H,W]; m [N,1,H,W]; element_count normalisation."""
    return (m * (a - b) ** 2).sum() / a.numel()


def total_variation(x):
    """x [N,C,H,W]; anisotropic L1, summed over everything."""
    return (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().sum() + (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().sum()


def forward_losses(cfg, params, x, ref, mask):
    clean = branch(cfg, params, "clean", x)
    noise = branch(cfg, params, "noise", x)
    if cfg["combine"] == "additive_db":
        rebuilt = clean + noise
    elif cfg["combine"] == "multiplicative_linear":
        rebuilt = clean * noise
    else:
        raise ValueError(cfg["combine"])
    clean_loss = masked_mse(clean, ref, mask)
    recon_loss = masked_mse(rebuilt, x, mask)
    total = cfg["clean_weight"] * clean_loss + cfg["reconstruction_weight"] * recon_loss
    if cfg["tv_weight"] > 0:
        tv = total_variation(clean)
        total = total + cfg["tv_weight"] * tv
    else:
        tv = torch.zeros(())
    return clean, noise, (clean_loss, recon_loss, tv, total)


# ---- data ---------------------------------------------------------------------------------------

def smooth_field(rng, n, h, w, c, passes=3):
    """A smooth random field in roughly [-1, 1]: white noise box-blurred a few times."""
    f = rng.standard_normal((n, h + 8, w + 8, c))
    k = np.ones(3) / 3.0
    for _ in range(passes):
        f = np.apply_along_axis(lambda v: np.convolve(v, k, mode="same"), 1, f)
        f = np.apply_along_axis(lambda v: np.convolve(v, k, mode="same"), 2, f)
    f = f[:, 4:4 + h, 4:4 + w, :]
    return f / np.abs(f).max()


def make_mask(rng, n, h, w, zero_fraction):
    return (rng.random((n, h, w, 1)) >= zero_fraction).astype(np.float64)


def data_additive_db(rng, n, h, w, c):
    # dB backscatter: VV around -12 dB, VH around -18 dB, a smooth scene plus speckle in dB.
    offsets = np.array([-12.0, -18.0][:c] + [-15.0] * max(0, c - 2))
    reference = offsets + 3.0 * smooth_field(rng, n, h, w, c)
    noisy = reference + 3.0 * rng.standard_normal((n, h, w, c))
    return noisy, reference, make_mask(rng, n, h, w, 0.25)


def data_multiplicative_linear(rng, n, h, w, c):
    # Linear intensity: clean in [0.02, 0.2], times unit-mean gamma speckle with L = 4 looks.
    clean = 0.02 + 0.18 * (0.5 + 0.5 * smooth_field(rng, n, h, w, c))
    speckle = rng.gamma(shape=4.0, scale=1.0 / 4.0, size=(n, h, w, c))
    return clean * speckle, clean, make_mask(rng, n, h, w, 0.2)


CASES = [
    # name, combine, channels, tv_weight, seed
    ("additive_db", "additive_db", 2, 0.0, 1001),
    ("multiplicative_linear", "multiplicative_linear", 1, 0.0, 2002),
    ("additive_db_tv", "additive_db", 2, 0.01, 3003),
]
N, H, W = 2, 11, 9
STEPS = 5
LR = 1e-3


def run_case(name, combine, channels, tv_weight, seed):
    cfg = {
        "depth": 4, "filters": 8, "channels": channels, "kernel": 3, "combine": combine,
        "bn_eps": 1e-4, "clean_weight": 100.0, "reconstruction_weight": 1.0, "tv_weight": tv_weight,
        "lr": LR, "steps": STEPS,
    }
    rng = np.random.default_rng(seed)
    if combine == "additive_db":
        x_nhwc, ref_nhwc, mask_nhwc = data_additive_db(rng, N, H, W, channels)
    else:
        x_nhwc, ref_nhwc, mask_nhwc = data_multiplicative_linear(rng, N, H, W, channels)
    params = init_params(cfg, rng, x_nhwc)
    initial = {k: v.detach().clone() for k, v in params.items()}
    x0 = torch.tensor(x_nhwc).permute(0, 3, 1, 2)
    for b in BRANCHES:  # every first-layer unit is active on some pixels and inactive on others
        z = F.conv2d(x0, params[f"{b}.conv0.weight"].detach().permute(3, 2, 0, 1).contiguous(),
                     params[f"{b}.conv0.bias"].detach(), padding=cfg["kernel"] // 2)
        active = (z > 0).double().mean(dim=(0, 2, 3))
        assert bool(((active > 0) & (active < 1)).all()), (name, b, active)

    to_nchw = lambda a: torch.tensor(a, dtype=torch.float64).permute(0, 3, 1, 2).contiguous()
    to_nhwc = lambda t: t.detach().permute(0, 2, 3, 1).contiguous().numpy()
    x, ref, mask = to_nchw(x_nhwc), to_nchw(ref_nhwc), to_nchw(mask_nhwc)

    opt = torch.optim.Adam(list(params.values()), lr=LR, betas=(0.9, 0.999), eps=1e-8)
    losses = np.zeros((STEPS, 4))
    tensors = {}
    for step in range(STEPS):
        opt.zero_grad(set_to_none=True)
        clean, noise, l = forward_losses(cfg, params, x, ref, mask)
        losses[step] = [float(v.detach()) for v in l]
        l[3].backward()
        if step == 0:
            tensors[f"{name}/clean"] = to_nhwc(clean)
            tensors[f"{name}/noise"] = to_nhwc(noise)
            for pname, _ in param_specs(cfg):
                tensors[f"{name}/grad/{pname}"] = params[pname].grad.detach().numpy().copy()
        opt.step()

    tensors[f"{name}/input"] = x_nhwc
    tensors[f"{name}/reference"] = ref_nhwc
    tensors[f"{name}/mask"] = mask_nhwc
    for pname, _ in param_specs(cfg):
        tensors[f"{name}/param/{pname}"] = initial[pname].numpy()
    tensors[f"{name}/losses"] = losses
    print(f"{name}: losses (clean, recon, tv, total) per step:\n{losses}")
    return cfg, tensors


# ---- safetensors, written by hand ---------------------------------------------------------------

def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": metadata}
    blobs, offset = [], 0
    for key in sorted(tensors):
        a = np.ascontiguousarray(np.asarray(tensors[key], dtype="<f8"))
        raw = a.tobytes(order="C")
        header[key] = {"dtype": "F64", "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, path)


def main():
    metadata = {
        "format": "despeck-golden",
        "version": "1",
        "generator": "tests/golden/make_golden.py",
        "torch_version": torch.__version__,
    }
    tensors = {}
    for case in CASES:
        cfg, t = run_case(*case)
        metadata[f"{case[0]}/config"] = json.dumps(cfg, sort_keys=True)
        tensors.update(t)
    write_safetensors(OUT, tensors, metadata)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes, {len(tensors)} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
