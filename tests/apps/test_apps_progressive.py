"""Progressive generation (DDPM Fig. 6): x0_hat along the chain."""

import pytest
import torch

from elbolab.apps.progressive import ProgressiveRequest, frame_indices, progressive_generation


def test_frame_indices():
    assert frame_indices(10, 4) == [0, 3, 6, 9]
    assert frame_indices(3, 10) == [0, 1, 2]
    with pytest.raises(ValueError, match="frames"):
        frame_indices(10, 1)


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_progressive_frames(gaussian_oracle, sampler):
    oracle, d, mean, _ = gaussian_oracle
    res = progressive_generation(oracle, (64, 1, 2, 4), d, generator=torch.Generator().manual_seed(0), frames=5,
                                 sampler=sampler)
    assert res.x0s.shape == (5, 64, 1, 2, 4) and res.xs.shape == (5, 64, 1, 2, 4)
    assert res.timesteps.tolist() == [100, 75, 50, 26, 1]
    # the last estimate (t = 1) is the sample itself; the first (t = T) is E[x0 | x_T] ~ the data mean
    assert torch.allclose(res.x0s[-1], res.sample, atol=1e-6) and float(res.distortion[-1]) < 1e-6
    assert (res.x0s[0].reshape(64, 8).double() - mean).abs().max() < 0.05
    assert res.distortion[0] > res.distortion[-2] > res.distortion[-1]


def test_progressive_request_validation():
    with pytest.raises(ValueError, match="'ancestral', 'ddim'"):
        ProgressiveRequest(sampler="pc")
    with pytest.raises(ValueError, match="n = 0"):
        ProgressiveRequest(n=0)
