"""Evaluation-metric reference fixtures from PyPI implementations: the Inception Score from given logits
(torch-fidelity) and improved precision/recall from given features (prdc, Naeem et al. 2020, the same k-NN
manifold definition as the ADM evaluator's ManifoldEstimator).

Kinds:
- `inception_score`: torch_fidelity.metric_isc.isc_features_to_metric(logits, splits,
  shuffle=False): softmax in float64, `splits` contiguous splits (rows i*N//splits .. (i+1)*N//splits),
  mean and population std of exp(mean KL(p(y|x) || p(y))) over splits.
- `precision_recall`: prdc.compute_prdc(real, fake, nearest_k): the radius of a point is the distance
  to its k-th nearest neighbour in its own set (itself excluded); precision = fraction of fake points inside
  some real ball, recall = fraction of real points inside some fake ball. Seeds are kept only if no
  distance lies within a relative 1e-4 of a radius (no near-ties that float32 rounding could flip).

usage: python gen_eval_metrics.py OUTDIR [variant]   (variant: public (default) or any other word)"""
import json, os, sys
import numpy as np
import torch
from safetensors.torch import save_file
import torch_fidelity
from torch_fidelity.metric_isc import isc_features_to_metric
import prdc


def save(outdir, name, tensors, side):
    save_file({k: v.contiguous().clone() for k, v in tensors.items()}, f"{outdir}/{name}.safetensors")
    json.dump(side, open(f"{outdir}/{name}.json", "w"), indent=1)
    print(name, os.path.getsize(f"{outdir}/{name}.safetensors"))


def inception_score(outdir, name, n, classes, splits, seed):
    g = torch.Generator().manual_seed(seed)
    # a few confident, unevenly used classes so the score is far from 1 and from `classes`
    logits = torch.randn(n, classes, generator=g) * 2.0
    logits[torch.arange(n), torch.randint(0, max(2, classes // 50), (n,), generator=g)] += 8.0
    out = isc_features_to_metric(logits, splits=splits, shuffle=False)
    mean, std = out["inception_score_mean"], out["inception_score_std"]
    T = {"input.logits": logits, "output.isc_mean": torch.tensor([mean], dtype=torch.float64),
         "output.isc_std": torch.tensor([std], dtype=torch.float64)}
    save(outdir, name, T, {"kind": "inception_score",
         "source": {"package": "torch-fidelity", "version": torch_fidelity.__version__},
         "config": {"splits": splits, "shuffle": False}, "seed": seed, "tolerance": {"atol": 1e-8, "rtol": 1e-8},
         "tensors": {"input.logits": "[N, C] float32 classifier logits",
                     "output.isc_mean": "[1] float64 inception_score_mean", "output.isc_std": "[1] float64 inception_score_std"}})
    print("  IS", mean, std)


def min_margin(real, fake, k):
    d = lambda a, b: np.sqrt(((a[:, None, :].astype(np.float64) - b[None, :, :]) ** 2).sum(-1))
    rr, ff, rf = d(real, real), d(fake, fake), d(real, fake)
    r_real, r_fake = np.sort(rr, 1)[:, k], np.sort(ff, 1)[:, k]
    m1 = np.abs(rf - r_real[:, None]) / r_real[:, None]
    m2 = np.abs(rf - r_fake[None, :]) / r_fake[None, :]
    own = lambda m, r: np.abs(np.sort(m, 1)[:, k] - np.sort(m, 1)[:, k + 1]) / r  # k-th vs (k+1)-th neighbour
    return min(m1.min(), m2.min(), own(rr, r_real).min(), own(ff, r_fake).min())


def precision_recall(outdir, name, n_real, n_fake, dim, k, seed):
    while True:
        rng = np.random.default_rng(seed)
        real = rng.standard_normal((n_real, dim)).astype(np.float32)
        fake = (rng.standard_normal((n_fake, dim)) * 1.3 + 0.4).astype(np.float32)
        if min_margin(real, fake, k) > 1e-4:
            break
        seed += 1000
    out = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=k)
    T = {"input.real_features": torch.from_numpy(real), "input.fake_features": torch.from_numpy(fake),
         "output.precision": torch.tensor([float(out["precision"])], dtype=torch.float64),
         "output.recall": torch.tensor([float(out["recall"])], dtype=torch.float64)}
    save(outdir, name, T, {"kind": "precision_recall", "source": {"package": "prdc", "version": "0.2"},
         "config": {"nearest_k": k}, "seed": seed, "tolerance": {"atol": 1e-12, "rtol": 0.0},
         "tensors": {"input.real_features": "[N1, D] float32 reference features",
                     "input.fake_features": "[N2, D] float32 sample features",
                     "output.precision": "[1] float64 prdc precision", "output.recall": "[1] float64 prdc recall"}})
    print("  precision", out["precision"], "recall", out["recall"])


if __name__ == "__main__":
    out = sys.argv[1]
    variant = sys.argv[2] if len(sys.argv) > 2 else "public"
    os.makedirs(out, exist_ok=True)
    if variant == "public":
        inception_score(out, "inception_score_splits10", 103, 1008, 10, 701)
        precision_recall(out, "precision_recall_k3", 120, 100, 32, 3, 702)
    else:
        inception_score(out, "inception_score_h_splits4", 57, 40, 4, 801)
        precision_recall(out, "precision_recall_h_k5", 90, 130, 16, 5, 802)
