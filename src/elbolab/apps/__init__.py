"""Applications of trained models, the pictures of the lecture notes (one module per application):

- :mod:`~elbolab.apps.inpainting`: RePaint (Lugmayr et al. 2022) with an unconditional DDPM, built-in masks
  (1 = keep), mean and harmonic fill baselines;
- :mod:`~elbolab.apps.progressive`: progressive generation, x0_hat along the reverse chain (DDPM Fig. 6);
- :mod:`~elbolab.apps.shared_latent`: several x_0 ~ p(x_0 | x_t) from one x_t (DDPM Fig. 7);
- :mod:`~elbolab.apps.interpolation`: interpolation through q(x_t | x_0) codes (DDPM Figs. 8-9, coarse-to-fine),
  DDIM-inversion interpolation, and latent interpolation/editing of VAE runs;
- :mod:`~elbolab.apps.toy`: inverse-CDF sampling in 1-D and a 2-D density diffused and reversed (learned and
  exact), as particles and flow fields, PNG and GIF;
- :mod:`~elbolab.apps.chain`: the shared reverse-chain pieces (start at any t, DDIM inversion);
  :mod:`~elbolab.apps.io`: image/mask files in, PNG/npz out.

Each ``*_run`` / ``run_toy`` function takes a request dataclass and returns an output dataclass listing the
files it wrote (the CLI verbs ``inpaint``, ``progressive``, ``shared-latent``, ``interpolate``, ``toy``).
"""

from elbolab.apps.chain import ddim_decode, ddim_invert, reverse_from, reverse_from_shared_noise, truncate
from elbolab.apps.inpainting import (
    InpaintOutput,
    InpaintRequest,
    InpaintResult,
    MaskKind,
    harmonic_fill,
    inpaint_run,
    make_mask,
    masked_mse,
    mean_fill,
    repaint,
    repaint_schedule,
)
from elbolab.apps.interpolation import (
    InterpolateOutput,
    InterpolateRequest,
    InterpolationKind,
    InterpolationResult,
    coarse_to_fine,
    ddim_interpolate,
    diffusion_interpolate,
    interpolate_run,
)
from elbolab.apps.progressive import ProgressiveOutput, ProgressiveRequest, progressive_generation, progressive_run
from elbolab.apps.shared_latent import (
    SharedLatentOutput,
    SharedLatentRequest,
    shared_latent_run,
    shared_latent_samples,
)
from elbolab.apps.toy import ToyOutput, ToyRequest, run_toy

__all__ = [
    "InpaintOutput", "InpaintRequest", "InpaintResult", "MaskKind", "harmonic_fill", "inpaint_run", "make_mask",
    "masked_mse", "mean_fill", "repaint", "repaint_schedule",
    "InterpolateOutput", "InterpolateRequest", "InterpolationKind", "InterpolationResult", "coarse_to_fine",
    "ddim_interpolate", "diffusion_interpolate", "interpolate_run",
    "ProgressiveOutput", "ProgressiveRequest", "progressive_generation", "progressive_run",
    "SharedLatentOutput", "SharedLatentRequest", "shared_latent_run", "shared_latent_samples",
    "ToyOutput", "ToyRequest", "run_toy",
    "ddim_decode", "ddim_invert", "reverse_from", "reverse_from_shared_noise", "truncate",
]
