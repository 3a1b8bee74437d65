"""NoiseSchedule: values of the published schedules, conventions and validation."""

import math

import pytest
import torch

from elbolab.diffusion.config import DiffusionConfig, ScheduleKind, VarianceKind
from elbolab.diffusion import NoiseSchedule, ScheduleError, build_diffusion


def test_linear_schedule_matches_ho_et_al():
    s = NoiseSchedule.linear(T=1000, beta_start=1e-4, beta_end=0.02)
    assert s.T == 1000
    for name in ("betas", "alphas", "alpha_bars", "snr"):
        v = getattr(s, name)
        assert v.dtype == torch.float64 and v.shape == (1001,)
    assert s.betas[0] == 0 and s.alphas[0] == 1 and s.alpha_bars[0] == 1 and math.isinf(s.snr[0])
    assert s.betas[1] == pytest.approx(1e-4) and s.betas[1000] == pytest.approx(0.02)
    torch.testing.assert_close(s.alpha_bars[1:], torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000,
                                                                                    dtype=torch.float64), 0))
    # the value every DDPM implementation quotes: alpha_bar_T ~ 4.04e-5
    assert s.alpha_bars[-1].item() == pytest.approx(4.0358e-5, rel=1e-3)
    torch.testing.assert_close(s.snr, s.alpha_bars / (1 - s.alpha_bars))
    assert (s.log_snr[1:].diff() < 0).all()


def test_cosine_schedule_follows_nichol_dhariwal():
    T, sv = 1000, 0.008
    s = NoiseSchedule.cosine(T, s=sv)
    t = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((t / T + sv) / (1 + sv) * math.pi / 2) ** 2
    abar = f / f[0]
    unclipped = s.betas < 0.999
    torch.testing.assert_close(s.alpha_bars[unclipped], abar[unclipped], rtol=1e-10, atol=1e-12)
    assert s.betas.max() <= 0.999 and s.betas[-1] == pytest.approx(0.999)
    assert (s.alpha_bars.diff() < 0).all()


def test_posterior_variances_are_beta_tilde():
    s = NoiseSchedule.linear(50, 1e-3, 0.2)
    bt = s.posterior_variances
    assert bt[1] == 0.0
    t = 7
    expected = (1 - s.alpha_bars[t - 1]) / (1 - s.alpha_bars[t]) * s.betas[t]
    assert bt[t].item() == pytest.approx(expected.item(), rel=1e-14)
    assert (bt[2:] < s.betas[2:]).all()


def test_from_betas_and_from_alpha_bars_round_trip():
    s = NoiseSchedule.cosine(64)
    again = NoiseSchedule.from_alpha_bars(s.alpha_bars[1:])
    torch.testing.assert_close(again.betas, s.betas, rtol=1e-10, atol=1e-15)
    torch.testing.assert_close(NoiseSchedule.from_betas(s.betas[1:]).alpha_bars, s.alpha_bars)
    assert NoiseSchedule.from_betas([0.5]).T == 1


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: NoiseSchedule.from_betas([0.1, 0.0, 0.2]), r"betas\[t=2\] = 0.0 is outside \(0, 1\)"),
        (lambda: NoiseSchedule.from_betas([0.1, 1.0]), r"betas\[t=2\] = 1.0 is outside \(0, 1\)"),
        (lambda: NoiseSchedule.from_betas([-0.1]), r"outside \(0, 1\)"),
        (lambda: NoiseSchedule.from_betas([0.1, float("nan")]), "not finite"),
        (lambda: NoiseSchedule.from_betas([]), "T >= 1"),
        (lambda: NoiseSchedule.linear(T=0), r"T = 0 must be an integer >= 1"),
        (lambda: NoiseSchedule.cosine(T=-3), r"T = -3"),
        (lambda: NoiseSchedule.linear(T=10, beta_start=0.0), "both must be in"),
        (lambda: NoiseSchedule.from_alpha_bars([0.9, 0.95, 0.5]), r"strictly decreasing.*alpha_bar_2"),
        (lambda: NoiseSchedule.from_alpha_bars([1.0, 0.5]), r"strictly decreasing.*alpha_bar_1"),
        (lambda: NoiseSchedule.from_alpha_bars([0.5, 0.0]), r"alpha_bars\[t=2\] = 0.0 must be > 0"),
        (lambda: NoiseSchedule.from_kind("quadratic", 10), "expected one of 'linear', 'cosine'"),
    ],
)
def test_invalid_schedules_raise_clear_errors(make, match):
    with pytest.raises(ScheduleError, match=match):
        make()
    assert issubclass(ScheduleError, ValueError)


def test_short_unscaled_linear_schedule_warns(caplog):
    with caplog.at_level("WARNING", logger="elbolab.diffusion.schedules"):
        NoiseSchedule.linear(T=100)
    assert "alpha_bar_T = 0.36" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="elbolab.diffusion.schedules"):
        NoiseSchedule.linear(T=100, beta_start=1e-3, beta_end=0.2)
    assert caplog.text == ""


def test_build_diffusion_from_config():
    d = build_diffusion(DiffusionConfig(schedule=ScheduleKind.COSINE, T=20, variance=VarianceKind.BETA))
    assert d.T == 20 and d.schedule.kind == "cosine" and d.variance is VarianceKind.BETA
    torch.testing.assert_close(d.schedule.betas, NoiseSchedule.cosine(20).betas)
    d = build_diffusion(DiffusionConfig(T=1000))
    torch.testing.assert_close(d.schedule.betas, NoiseSchedule.linear(1000).betas)


def test_log_snr_of_reads_the_table_at_integer_t_and_interpolates_at_float_t():
    s = NoiseSchedule.cosine(50)
    t = torch.tensor([1, 7, 50])
    assert torch.equal(s.log_snr_of(t), s.log_snr[t])
    torch.testing.assert_close(s.log_snr_of(t.double()), s.log_snr[t])
    mid = float(s.log_snr_of(torch.tensor([7.5])))
    assert float(s.log_snr[8]) < mid < float(s.log_snr[7])


def test_from_alpha_bars_can_leave_out_the_terminal_warning(caplog):
    with caplog.at_level("WARNING", logger="elbolab.diffusion.schedules"):
        NoiseSchedule.from_alpha_bars(torch.tensor([0.9, 0.5]), warn_terminal=False)
        assert not caplog.records
        NoiseSchedule.from_alpha_bars(torch.tensor([0.9, 0.5]))
        assert "alpha_bar_T" in caplog.text
