"""The floor of the D* = 1/2 check (lecture notes 003; issue 17): a fresh logistic discriminator fitted on real
images against other real images, exactly as ``quality.py`` fits one on held-out real test images against a GAN's
samples (:func:`elbolab.gan.fresh_discriminator_check`: half of each set to fit, the other half to read). What
it reads is what "D* = 1/2" can look like with n images: the check's noise and overfitting, with no generator.

    python benchmarks/dstar_floor.py --data-dir ../shared/data/mnist --out benchmarks/results/dstar_floor.json

Rows: real test vs real train images (``--n`` each) on pixels and on the shipped MNIST feature network's
features, for ``--seeds`` splits (mean and spread).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import torch

from elbolab.config import DataConfig
from elbolab.data import load_dataset
from elbolab.evaluate import extract_features
from elbolab.evaluate.features import load_feature_network
from elbolab.gan import fresh_discriminator_check
from elbolab.host import host_info
from elbolab.io import atomic_write_text

logger = logging.getLogger("benchmarks.dstar_floor")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default="")
    p.add_argument("--n", type=int, default=2000, help="real images of each set (the GAN check uses 2000)")
    p.add_argument("--seeds", type=int, default=5, help="random splits")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="benchmarks/results/dstar_floor.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    test = load_dataset(DataConfig(name=args.dataset, data_dir=args.data_dir, split="test", limit=args.n))
    train = load_dataset(DataConfig(name=args.dataset, data_dir=args.data_dir, split="train"))
    a, _ = test.batch(torch.arange(len(test)))
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[: args.n]
    b, _ = train.batch(idx)
    net = load_feature_network(args.dataset)
    feats = lambda x: torch.from_numpy(extract_features(net, x).features).double()  # noqa: E731
    spaces = {"pixels": (a, b), "features": (feats(a), feats(b))}
    rows = {}
    for name, (r, f) in spaces.items():
        checks = [fresh_discriminator_check(r, f, torch.Generator().manual_seed(s)) for s in range(args.seeds)]
        rows[name] = {k: {"mean": statistics.fmean(getattr(c, k) for c in checks),
                          "stdev": statistics.stdev(getattr(c, k) for c in checks) if len(checks) > 1 else 0.0}
                      for k in ("d_real", "d_fake", "accuracy")}
        rows[name]["checks"] = [dataclasses.asdict(c) for c in checks]
        logger.info("%s: D(real) %.3f, D(fake) %.3f, accuracy %.3f +- %.3f", name, rows[name]["d_real"]["mean"],
                    rows[name]["d_fake"]["mean"], rows[name]["accuracy"]["mean"], rows[name]["accuracy"]["stdev"])
    out = {"dataset": args.dataset, "n": args.n, "seeds": args.seeds, "real": "test", "other": "train (random subset)",
           "rows": rows, "seconds": round(time.perf_counter() - t0, 1), "host": host_info(),
           "command": " ".join(["python", "benchmarks/dstar_floor.py", *(argv if argv is not None else sys.argv[1:])])}
    atomic_write_text(Path(args.out), json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
