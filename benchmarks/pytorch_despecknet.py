#!/usr/bin/env python3
"""PyTorch reference timing of the same deSpeckNet work that examples/time_train_step measures.

Full-size model (2 branches x 17 conv layers, 64 filters, BatchNorm eps 1e-4, bias on every conv),
float32, additive (dB) combine, loss 100 * MSE(clean, reference) + MSE(clean + noise, input), Adam
lr 1e-3; one training step on a batch of 16 x 40 x 40 x 2, and clean-branch inference (eval mode,
no autograd) on one tile. Run with Debian's interpreter, which has python3-torch:

    /usr/bin/python3 benchmarks/pytorch_despecknet.py --threads 2 --steps 3 --tile 256

Prints lines in the same form as time_train_step, so benchmarks/compare_all.sh can put them side
by side.
"""
import argparse
import time

import torch
import torch.nn as nn


def branch(channels, depth=17, filters=64):
    layers = [nn.Conv2d(channels, filters, 3, padding=1), nn.ReLU(inplace=True)]
    for _ in range(depth - 2):
        layers += [nn.Conv2d(filters, filters, 3, padding=1), nn.BatchNorm2d(filters, eps=1e-4), nn.ReLU(inplace=True)]
    layers.append(nn.Conv2d(filters, channels, 3, padding=1))
    return nn.Sequential(*layers)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--tile", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # tiny activations must not fall on the slow denormal path
    torch.manual_seed(1)
    clean_branch, noise_branch = branch(2), branch(2)
    params = list(clean_branch.parameters()) + list(noise_branch.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    ref = -12 + 3 * torch.randn(16, 2, 40, 40)
    x = ref + 2 * torch.randn(16, 2, 40, 40)

    def step():
        opt.zero_grad(set_to_none=True)
        clean = clean_branch(x)
        noise = noise_branch(x)
        loss = 100 * torch.mean((clean - ref) ** 2) + torch.mean((clean + noise - x) ** 2)
        loss.backward()
        opt.step()
        return loss.item()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    if args.steps > 0:  # --steps 0: inference only (for separate memory measurements)
        step()  # warm-up
        t0 = time.perf_counter()
        for _ in range(args.steps):
            loss = step()
        ms = (time.perf_counter() - t0) / args.steps * 1e3
        gflop = 170.6
        print(f"training step (batch 16 of 40x40x2, depth 17, 64 filters): {ms:.1f} ms  ({gflop} GFLOP, {gflop / (ms / 1e3):.1f} GFLOP/s)  loss {loss:.3f}")
    if args.tile > 0:
        # Stock PyTorch inference both ways, eval mode and no autograd: eager, and scripted + frozen
        # (which folds batch norm into the convolutions). The faster of the two is the baseline.
        clean_branch.eval()
        img = -12 + 3 * torch.randn(1, 2, args.tile, args.tile)
        best = None
        with torch.no_grad():
            frozen = torch.jit.freeze(torch.jit.script(clean_branch))
            for name, fn, warmups in (("eager", clean_branch, 1), ("frozen TorchScript", frozen, 2)):
                for _ in range(warmups):  # the frozen module's first two runs are the JIT's profiling runs
                    fn(img)
                t1 = time.perf_counter()
                fn(img)
                s = time.perf_counter() - t1
                print(f"pytorch {name} inference {args.tile}x{args.tile}x2: {s:.3f} s  ({args.tile * args.tile / s / 1e6:.3f} Mpx/s)")
                if best is None or s < best[1]:
                    best = (name, s)
        name, s = best
        print(f"clean-branch inference (best: {name}) {args.tile}x{args.tile}x2: {s:.3f} s  ({args.tile * args.tile / s / 1e6:.3f} Mpx/s)")

if __name__ == "__main__":
    main()
