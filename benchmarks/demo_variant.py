"""One variant of the demo recipe (benchmarks/README.md, "the demo recipe"): ``elbolab demo``'s training, sampling and
scoring with ``--set``-style overrides of the ddpm-mnist preset, on one thread by default, so that two variants
can run side by side at fixed steps (the figures do not depend on the host's speed).

    OMP_NUM_THREADS=1 python benchmarks/demo_variant.py runs/ab/lean113 model.unet.level_res_blocks=[1,1,3] \\
        train.steps=1900

``--rescore W,W,...`` re-samples a trained class-conditional variant (no training) once per classifier-free
guidance weight w (-1 = the null class, 0 = conditional, > 0 guided) with the demo's sampler, seeds and scores,
and adds the accuracy (the classifier's label equals the conditioning label):

    OMP_NUM_THREADS=1 python benchmarks/demo_variant.py runs/ab/cond --rescore=-1,0,0.5,1 --json cond.json
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import torch

from elbolab.demo import demo_fidelity, run_demo
from elbolab.evaluate.features import load_feature_network
from elbolab.evaluate.pipeline import classifier_confidence
from elbolab.evaluate.reference import extract_features
from elbolab.evaluate.samples import as_uint8_images
from elbolab.families import SampleRequest
from elbolab.io import atomic_write_text
from elbolab.runs import draw_samples, load_run


def rescore(folder: str, weights: list[float], n: int, seed: int) -> list[dict]:
    run = load_run(folder)
    net = load_feature_network("mnist")
    rows = []
    for w in weights:
        t0 = time.perf_counter()
        batch = draw_samples(run, SampleRequest(n=n, seed=seed, guidance=w, labels="prior"))
        seconds = time.perf_counter() - t0
        conf = classifier_confidence(batch.images, "mnist")
        fid = demo_fidelity(run, batch.images, seed)
        logits = torch.from_numpy(extract_features(net, as_uint8_images(batch.images)).logits)
        acc = float((logits.argmax(1) == batch.labels).float().mean()) if batch.labels is not None else None
        row = {"w": w, "confident": conf.fraction, "class_counts": conf.class_counts, "accuracy": acc,
               "fid": fid["fid"], "precision": fid["precision"], "recall": fid["recall"], "n": n,
               "sampler": batch.method, "nfe": batch.nfe, "seconds": seconds, "step": run.step}
        print(f"w {w:g}: confident {conf.fraction:.3f}, accuracy {acc}, FID {fid['fid']:.2f}, precision "
              f"{fid['precision']:.3f}, recall {fid['recall']:.3f} ({batch.method}, {seconds:.0f} s)", flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="run folder")
    ap.add_argument("overrides", nargs="*", help="KEY=VALUE overrides of the ddpm-mnist preset")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rescore", default=None, metavar="W,W,...", help="re-sample the trained run per guidance w")
    ap.add_argument("--n", type=int, default=1000, help="samples per w (--rescore)")
    ap.add_argument("--json", default=None, help="write the --rescore rows here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.rescore is not None:
        rows = rescore(args.out, [float(w) for w in args.rescore.split(",")], args.n, seed=0)
        if args.json:
            atomic_write_text(args.json, json.dumps({"run": args.out, "rows": rows}, indent=2) + "\n")
        return 0
    print(run_demo(args.out, overrides=args.overrides, progress=False).to_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
