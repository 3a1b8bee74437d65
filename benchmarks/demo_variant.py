"""One variant of the demo recipe (benchmarks/README.md, "the demo recipe"): ``elbolab demo``'s training, sampling and
scoring with ``--set``-style overrides of the ddpm-mnist preset, on one thread by default, so that two variants
can run side by side at fixed steps (the figures do not depend on the host's speed).

    OMP_NUM_THREADS=1 python benchmarks/demo_variant.py runs/ab/lean113 model.unet.level_res_blocks=[1,1,3] \\
        train.steps=1900
"""

from __future__ import annotations

import argparse
import logging

import torch

from elbolab.demo import run_demo


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="run folder")
    ap.add_argument("overrides", nargs="*", help="KEY=VALUE overrides of the ddpm-mnist preset")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(run_demo(args.out, overrides=args.overrides, progress=False).to_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
