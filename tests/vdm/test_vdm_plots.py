"""The SNR-curve and estimator-variance PNGs of a VDM run (elbolab.vdm.plots)."""

import pytest
import torch

from elbolab.diffusion.schedules import NoiseSchedule
from elbolab.vdm import FixedLinearSchedule, LearnedMonotoneSchedule
from elbolab.vdm.plots import plot_estimator_variance, plot_snr_curves, snr_curves

PNG = b"\x89PNG\r\n\x1a\n"


def test_snr_curves_hold_the_schedules():
    curves = snr_curves(FixedLinearSchedule(-13.3, 5.0), points=11, T=1000)
    (t, run), (t2, fixed), (tl, lin), (tc, cos) = curves.values()
    assert run == pytest.approx(fixed) and run[0] == pytest.approx(13.3) and run[-1] == pytest.approx(-5.0)
    assert tl[-1] == 1.0 and lin[-1] == pytest.approx(float(NoiseSchedule.linear(1000).log_snr[-1]))
    assert cos[0] == pytest.approx(float(NoiseSchedule.cosine(1000).log_snr[1]))


def test_pngs_are_written(tmp_path):
    sched = LearnedMonotoneSchedule(hidden=8, generator=torch.Generator().manual_seed(0))
    plot_snr_curves(sched, tmp_path / "snr.png")
    assert (tmp_path / "snr.png").read_bytes()[:8] == PNG
    recs = [{"step": i, "loss": 1.0, "denoising_var": 1.0 / i} for i in range(1, 20)]
    plot_estimator_variance(recs, tmp_path / "var.png")
    assert (tmp_path / "var.png").read_bytes()[:8] == PNG and (tmp_path / "var.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="denoising_var"):
        plot_estimator_variance([{"step": 1, "loss": 1.0}], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
    plot_estimator_variance({"learned": recs, "fixed": [{**r, "denoising_var": 2.0 / r["step"]} for r in recs]},
                            tmp_path / "two.png")  # several runs on one axis
    assert (tmp_path / "two.png").read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match="denoising_var"):
        plot_estimator_variance({"a": [{"step": 1}]}, tmp_path / "none.png")
