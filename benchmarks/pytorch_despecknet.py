#!/usr/bin/env python3
"""PyTorch reference timing of the same deSpeckNet work that examples/time_train_step measures.

Full-size model (2 branches x 17 conv layers, 64 filters, BatchNorm eps 1e-4, bias on every conv),
float32, additive (dB) combine, loss 100 * MSE(clean, reference) + MSE(clean + noise, input), Adam
lr 1e-3; one training step on a batch of 16 x 40 x 40 x 2, and clean-branch inference (eval mode,
no autograd) on one tile. Run with Debian's interpreter, which has python3-torch:

    /usr/bin/python3 benchmarks/pytorch_despecknet.py --threads 2 --steps 3 --tile 512

The baseline is PyTorch at its best on this machine, not as it happens to come out of the box:
every variant below is timed and the fastest is reported.
  - memory layout: NCHW (the default) and channels_last (NHWC, what oneDNN prefers);
  - inference: eager and scripted + frozen TorchScript (which folds batch norm into the convs);
  - inference runs are repeated (--repeats) and each variant's median counts.
The allocator matters as much: PyTorch frees its large activations after each layer, glibc returns
them to the kernel, and the next layer page-faults them back in, which on this virtual machine
costs about 13 us per 4 KiB page (a 64 MiB activation: about 210 ms). benchmarks/compare_all.sh
therefore runs this script under jemalloc with page purging disabled (LD_PRELOAD, MALLOC_CONF; in
the spirit of PyTorch's CPU performance guide, which recommends jemalloc with very long decay
times), and once more with the stock allocator for reference. Inference takes each configuration's
median of --repeats runs and the best configuration, where time_train_step takes the median of
its own --repeats runs of its one configuration: the choice of configuration favours PyTorch.

Prints lines in the same form as time_train_step, so benchmarks/compare_all.sh can put them side
by side: per-variant lines start with "variant", the baseline lines with "training step" and
"clean-branch inference".
"""
import argparse
import copy
import statistics
import time

import numpy as np
import torch
import torch.nn as nn


def branch(channels, depth=17, filters=64):
    layers = [nn.Conv2d(channels, filters, 3, padding=1), nn.ReLU(inplace=True)]
    for _ in range(depth - 2):
        layers += [nn.Conv2d(filters, filters, 3, padding=1), nn.BatchNorm2d(filters, eps=1e-4), nn.ReLU(inplace=True)]
    layers.append(nn.Conv2d(filters, channels, 3, padding=1))
    return nn.Sequential(*layers)


LAYOUTS = {"nchw": torch.contiguous_format, "nhwc": torch.channels_last}


def train_variant(layout, steps):
    """Mean over `steps` timed steps after one warm-up, as time_train_step does."""
    fmt = LAYOUTS[layout]
    torch.manual_seed(1)
    clean_branch, noise_branch = branch(2).to(memory_format=fmt), branch(2).to(memory_format=fmt)
    params = list(clean_branch.parameters()) + list(noise_branch.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    ref = -12 + 3 * torch.randn(16, 2, 40, 40)
    x = (ref + 2 * torch.randn(16, 2, 40, 40)).contiguous(memory_format=fmt)
    ref = ref.contiguous(memory_format=fmt)

    def step():
        opt.zero_grad(set_to_none=True)
        clean = clean_branch(x)
        noise = noise_branch(x)
        loss = 100 * torch.mean((clean - ref) ** 2) + torch.mean((clean + noise - x) ** 2)
        loss.backward()
        opt.step()
        return loss.item()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    return (time.perf_counter() - t0) / steps * 1e3, loss, clean_branch


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps (0: inference only)")
    parser.add_argument("--tile", type=int, default=256, help="side of the inference tile (0: skip)")
    parser.add_argument("--repeats", type=int, default=3, help="timed inference runs per variant")
    parser.add_argument("--layouts", default="nchw,nhwc", help="comma list of nchw, nhwc")
    parser.add_argument("--modes", default="eager,frozen", help="inference: comma list of eager, frozen")
    parser.add_argument("--pretrained", help="the authors' MatConvNet model (.mat): time its clean branch instead (needs --image)")
    parser.add_argument("--image", help="with --pretrained: a .npy image, [H,W] float32, mirrored out to the tile")
    args = parser.parse_args()
    layouts = [l for l in args.layouts.split(",") if l]
    modes = [m for m in args.modes.split(",") if m]
    for l in layouts:
        if l not in LAYOUTS:
            parser.error(f"--layouts: unknown layout '{l}' (nchw, nhwc)")
    for m in modes:
        if m not in ("eager", "frozen"):
            parser.error(f"--modes: unknown mode '{m}' (eager, frozen)")
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # tiny activations must not fall on the slow denormal path
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    gflop = 170.6
    best_train, trained = None, {}
    for layout in layouts:
        if args.steps == 0:  # inference only (peak-memory runs): an untrained model, no training peak
            torch.manual_seed(1)
            trained[layout] = branch(2).to(memory_format=LAYOUTS[layout])
            continue
        # Inference runs the clean branch after the training steps, so its weights and batch-norm
        # statistics are those of a stepped model (an untrained one can decay into denormals).
        ms, loss, clean = train_variant(layout, args.steps)
        trained[layout] = clean
        print(f"variant {layout}: training step {ms:.1f} ms  loss {loss:.3f}")
        if best_train is None or ms < best_train[1]:
            best_train = (layout, ms, loss)
    if best_train:
        layout, ms, loss = best_train
        print(f"training step (batch 16 of 40x40x2, depth 17, 64 filters; best: {layout}): {ms:.1f} ms  "
              f"({gflop} GFLOP, {gflop / (ms / 1e3):.1f} GFLOP/s)  loss {loss:.3f}")
    if args.tile > 0 and not args.pretrained:
        img = -12 + 3 * torch.randn(1, 2, args.tile, args.tile)
        time_inference({l: trained[l].eval() for l in layouts}, img, modes, args.repeats, "clean-branch inference")
    if args.pretrained:
        if not args.image or args.tile <= 0:
            parser.error("--pretrained needs --image and a --tile above 0")
        img = mirrored_tile(np.load(args.image).astype(np.float32), args.tile)
        model = pretrained_clean_branch(args.pretrained)
        time_inference({l: copy.deepcopy(model).to(memory_format=LAYOUTS[l]) for l in layouts}, img, modes, args.repeats,
                       "pretrained-model inference")


def time_inference(module_by_layout, img, modes, repeats, what):
    """Each layout x mode's median of `repeats` runs after warm-up; prints the variants and the best."""
    best = None
    tile, channels = img.shape[2], img.shape[1]
    shape = f"{tile}x{tile}x{channels}"
    with torch.no_grad():
        for layout, clean in module_by_layout.items():
            x = img.contiguous(memory_format=LAYOUTS[layout])
            for mode in modes:
                fn = clean if mode == "eager" else torch.jit.freeze(torch.jit.script(clean))
                for _ in range(2):  # warm-up; the frozen module's first two runs are the JIT's profiling runs
                    fn(x)
                times = []
                for _ in range(max(repeats, 1)):
                    t1 = time.perf_counter()
                    fn(x)
                    times.append(time.perf_counter() - t1)
                s = statistics.median(times)
                px = tile * tile
                print(f"variant {mode} {layout}: {what} {shape} median {s:.3f} s "
                      f"({px / s / 1e6:.3f} Mpx/s; runs {', '.join(f'{px / t / 1e6:.3f}' for t in times)})")
                if best is None or s < best[1]:
                    best = (f"{mode} {layout}", s)
    name, s = best
    print(f"{what} (best: {name}) {shape}: {s:.3f} s  ({tile * tile / s / 1e6:.3f} Mpx/s)")


def mirrored_tile(image, side):
    """[H,W] or [H,W,C] mirrored out to side x side (period 2H, 2W), as time_train_step --image: [1,C,side,side]."""
    if image.ndim == 2:
        image = image[:, :, None]
    def mirror(n):
        m = np.arange(side) % (2 * n)
        return np.where(m < n, m, 2 * n - 1 - m)
    tile = image[mirror(image.shape[0])][:, mirror(image.shape[1])]
    return torch.from_numpy(np.ascontiguousarray(tile.transpose(2, 0, 1)))[None]


def pretrained_clean_branch(path):
    """The clean branch of the authors' MatConvNet model, eval mode, mapped as despeck's importer
    (include/despeck/io/matconvnet.hpp) maps it. MatConvNet's test-mode batch norm divides by its
    stored sigma: running_var = sigma^2 - eps, with the layers' own epsilon (1e-5)."""
    import warnings
    # numpy, imported again by scipy after set_flush_denormal, finds no subnormals and says so.
    warnings.filterwarnings("ignore", message="The value of the smallest subnormal")
    import scipy.io  # python3-scipy; only this option needs it
    net = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)["net"]
    params = {p.name: np.asarray(p.value, dtype=np.float32) for p in net.params}
    convs = sorted(int(l.name[4:]) for l in net.layers if l.type == "dagnn.Conv" and int(l.name[4:]) <= 48)
    bnorms = sorted(int(l.name[5:]) for l in net.layers if l.type == "dagnn.BatchNorm" and int(l.name[5:]) <= 48)
    epsilon = {l.name: float(l.block.epsilon) for l in net.layers if l.type == "dagnn.BatchNorm"}
    model = branch(1)
    layer_convs = [m for m in model if isinstance(m, nn.Conv2d)]
    layer_bns = [m for m in model if isinstance(m, nn.BatchNorm2d)]
    if len(convs) != len(layer_convs) or len(bnorms) != len(layer_bns):
        raise SystemExit(f"{path}: {len(convs)} convs and {len(bnorms)} batch norms in the clean branch, not 17 and 15")
    with torch.no_grad():
        for conv, k in zip(layer_convs, convs):
            w = params[f"conv{k}_f"].reshape(3, 3, conv.in_channels, conv.out_channels)
            conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1))))
            conv.bias.copy_(torch.from_numpy(params[f"conv{k}_b"].reshape(-1)))
        for bn, k in zip(layer_bns, bnorms):
            bn.eps = epsilon[f"bnorm{k}"]  # the layer's own epsilon (1e-5), as despeck's importer uses it
            m = params[f"bnorm{k}_m"].reshape(64, 2).astype(np.float64)
            bn.weight.copy_(torch.from_numpy(params[f"bnorm{k}_g"].reshape(-1)))
            bn.bias.copy_(torch.from_numpy(params[f"bnorm{k}_b"].reshape(-1)))
            bn.running_mean.copy_(torch.from_numpy(m[:, 0].astype(np.float32)))
            bn.running_var.copy_(torch.from_numpy((m[:, 1] ** 2 - bn.eps).astype(np.float32)))
    return model.eval()

if __name__ == "__main__":
    main()
