"""Quantus' side of ``bench_metrics.py``, run inside Quantus' own virtual environment (PyTorch, no
Keras): rebuilds the Keras network from its exported operations and weights, runs the same metrics on
the same inputs and attributions, and prints one JSON line ``{metric: {"seconds", "score"}}``.

Usage (by bench_metrics.py): ``python quantus_side.py SPEC_JSON WEIGHTS.npz DATA.npz PATCH REPEATS
LABELS_JSON``: the metrics named in LABELS_JSON (bench_metrics.LABELS), those Quantus can run here
(its SmoothMPRT explains with ``quantus.explain``, which needs captum: left out).
"""

from __future__ import annotations

import json
import resource
import sys
import time

import numpy as np
import quantus
import torch

torch.set_num_threads(max(1, torch.get_num_threads()))


class Net(torch.nn.Module):
    """The exported network: convolutions and dense layers with their activations, max pooling, and a
    flatten in channels-last order (as Keras flattens)."""

    def __init__(self, spec: list[dict], weights: dict[str, np.ndarray]):
        super().__init__()
        self.spec = spec
        self.mods = torch.nn.ModuleList()
        for op in spec:
            if op["op"] == "conv":
                w = weights[op["w"]]
                conv = torch.nn.Conv2d(w.shape[2], w.shape[3], w.shape[:2],
                                       padding="same" if op["padding"] == "same" else 0)
                with torch.no_grad():
                    conv.weight.copy_(torch.from_numpy(w.transpose(3, 2, 0, 1).copy()))
                    conv.bias.copy_(torch.from_numpy(weights[op["b"]]))
                self.mods.append(conv)
            elif op["op"] == "dense":
                w = weights[op["w"]]
                lin = torch.nn.Linear(w.shape[0], w.shape[1])
                with torch.no_grad():
                    lin.weight.copy_(torch.from_numpy(w.T.copy()))
                    lin.bias.copy_(torch.from_numpy(weights[op["b"]]))
                self.mods.append(lin)
            elif op["op"] == "maxpool":
                self.mods.append(torch.nn.MaxPool2d(op["size"]))
            else:
                self.mods.append(torch.nn.Flatten())

    def forward(self, x):
        for op, mod in zip(self.spec, self.mods):
            if op["op"] == "flatten":
                x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
            else:
                x = mod(x)
            if op.get("act") == "relu":
                x = torch.relu(x)
        return x


def gradient(model, inputs, targets, **kwargs):
    """The gradient of the target logit with respect to the input (signed), as interprettensor's
    ``gradient`` method computes it."""
    x = torch.tensor(np.asarray(inputs), dtype=torch.float32, requires_grad=True)
    out = model(x)
    sel = out[torch.arange(len(x)), torch.as_tensor(np.asarray(targets), dtype=torch.long)].sum()
    (g,) = torch.autograd.grad(sel, x)
    return g.numpy()


def cpu_seconds() -> float:
    """User + system CPU time of this process (every thread)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    spec = json.loads(sys.argv[1])
    weights = dict(np.load(sys.argv[2]))
    data = np.load(sys.argv[3])
    patch, repeats = int(sys.argv[4]), int(sys.argv[5])
    wanted = json.loads(sys.argv[6])
    model = Net(spec, weights).eval()
    x = np.ascontiguousarray(data["x"].transpose(0, 3, 1, 2))
    y = data["y"]
    a = np.ascontiguousarray(data["a"].transpose(0, 3, 1, 2))
    size = x.shape[-1]
    metrics = {
        "PixelFlipping (96 steps)": (quantus.PixelFlipping(features_in_step=size * size // 32, perturb_baseline="black",
                                                           disable_warnings=True), {"a_batch": a}),
        "RegionPerturbation (20 regions)": (quantus.RegionPerturbation(patch_size=patch, regions_evaluation=20,
                                                                       disable_warnings=True), {"a_batch": a}),
        "MaxSensitivity (10 samples)": (quantus.MaxSensitivity(nr_samples=10, disable_warnings=True),
                                        {"a_batch": None, "explain_func": gradient}),
        "MPRT (bottom-up)": (quantus.MPRT(layer_order="bottom_up", disable_warnings=True),
                             {"a_batch": None, "explain_func": gradient}),
        "EfficientMPRT": (quantus.EfficientMPRT(disable_warnings=True), {"a_batch": None, "explain_func": gradient}),
    }
    out = {}
    for label in wanted:
        if label not in metrics:
            continue
        metric, kw = metrics[label]
        times, cpus, scores = [], [], None
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), cpu_seconds()
            scores = metric(model=model, x_batch=x, y_batch=y, channel_first=True, device="cpu", batch_size=64, **kw)
            times.append(time.perf_counter() - t0)
            cpus.append(cpu_seconds() - c0)
        flat = []
        for s in (scores.values() if isinstance(scores, dict) else scores):
            flat.extend(np.ravel(np.asarray(s, np.float64)).tolist())
        out[label] = {"seconds": min(times), "cpu": min(cpus), "score": float(np.nanmean(flat))}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
