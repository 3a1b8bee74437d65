"""Latent utilities: traversals ("vary z_1 / vary z_2"), interpolation (linear, slerp), attribute vectors and
editing, on models with a linear decoder where every output is known in closed form."""

import math

import pytest
import torch

from elbolab.vae.config import VAEKind
from elbolab.vae.config import VAEConfig
from elbolab.nn.convnets import MLPDecoder, MLPEncoder
from elbolab.vae import (
    VAE,
    attribute_vector,
    build_vae,
    edit,
    interpolate,
    latent_traversal,
    reconstruct,
    sample_prior,
    traversal_grid,
)
from elbolab.vae.editing import encode_latent, lerp
from elbolab.vae.likelihoods import GaussianFixed

SHAPE = (1, 2, 2)


def linear_vae(seed=0):
    """Encoder mean z = A x, decoder mean x = W z + b (small weights: outputs stay inside [-1, 1])."""
    g = torch.Generator().manual_seed(seed)
    enc, dec = MLPEncoder(SHAPE, (), 2 * 3), MLPDecoder(3, (), 1, SHAPE[1:])
    A = torch.randn(3, 4, generator=g)
    W, b = 0.05 * torch.randn(4, 3, generator=g), 0.1 * torch.randn(4, generator=g)
    with torch.no_grad():
        enc.mlp.net[-1].weight.copy_(torch.cat([A, torch.zeros(3, 4)]))
        enc.mlp.net[-1].bias.zero_()
        dec.mlp.net[-1].weight.copy_(W)
        dec.mlp.net[-1].bias.copy_(b)
    return VAE(enc, dec, GaussianFixed(0.1), 3, SHAPE), A, W, b


def _x(n, seed=1):
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_latent_traversal_moves_one_dimension():
    model, A, W, b = linear_vae()
    x = _x(1)
    values = torch.linspace(-2, 2, 5)
    rows = latent_traversal(model, x, dims=[0, 2], values=values)
    assert rows.shape == (2, 5, *SHAPE)
    z = A @ x.flatten()
    for r, d in enumerate((0, 2)):
        for i, v in enumerate(values):
            code = z.clone()
            code[d] = v
            torch.testing.assert_close(rows[r, i].flatten(), W @ code + b)
    with pytest.raises(ValueError, match="latent dims"):
        latent_traversal(model, x, dims=[3], values=values)
    with pytest.raises(ValueError, match="one image"):
        latent_traversal(model, _x(2), dims=[0], values=values)


def test_traversal_grid_is_the_vary_z1_vary_z2_grid():
    model, _, W, b = linear_vae()
    z = torch.tensor([0.3, -0.2, 0.5])
    values = torch.tensor([-1.0, 0.0, 2.0])
    grid = traversal_grid(model, z, (0, 1), values)
    assert grid.shape == (3, 3, *SHAPE)
    for i, vi in enumerate(values):
        for j, vj in enumerate(values):
            torch.testing.assert_close(grid[i, j].flatten(), W @ torch.tensor([vi, vj, 0.5]) + b)
    with pytest.raises(ValueError, match="two different"):
        traversal_grid(model, z, (1, 1), values)


@pytest.mark.parametrize("kind", ["linear", "slerp"])
def test_interpolation_ends_at_the_two_reconstructions(kind):
    model, A, W, b = linear_vae()
    xa, xb = _x(1, 2), _x(1, 3)
    path = interpolate(model, xa, xb, 7, kind)
    assert path.shape == (7, *SHAPE)
    torch.testing.assert_close(path[0], reconstruct(model, xa)[0])
    torch.testing.assert_close(path[-1], reconstruct(model, xb)[0])
    za, zb = A @ xa.flatten(), A @ xb.flatten()
    w = torch.linspace(0, 1, 7)
    codes = torch.linalg.lstsq(W, (path.flatten(1) - b).T).solution.T  # recover the decoded codes
    if kind == "linear":
        torch.testing.assert_close(codes, lerp(za, zb, w), atol=1e-4, rtol=0)
    else:  # slerp (Shoemake 1985): sin((1 - w) omega) / sin(omega) z_a + sin(w omega) / sin(omega) z_b
        omega = torch.arccos((za @ zb) / (za.norm() * zb.norm()))
        expected = (torch.sin((1 - w[:, None]) * omega) * za + torch.sin(w[:, None] * omega) * zb) / torch.sin(omega)
        torch.testing.assert_close(codes, expected, atol=1e-4, rtol=0)
        mid_lin = lerp(za, zb, torch.tensor([0.5]))[0]
        assert codes[3].norm() > mid_lin.norm()  # slerp does not cut the corner through the origin


def test_attribute_vector_and_edit():
    model, A, W, b = linear_vae()
    x = _x(10)
    has = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0, 0, 1], dtype=torch.bool)
    vec = attribute_vector(model, x, has)
    flat = x.flatten(1)
    torch.testing.assert_close(vec, A @ (flat[has].mean(0) - flat[~has].mean(0)))
    scales = torch.tensor([0.0, 1.0, -0.5])
    out = edit(model, x[:4], vec, scales)
    assert out.shape == (3, 4, *SHAPE)
    torch.testing.assert_close(out[0], reconstruct(model, x[:4]))
    torch.testing.assert_close(out[1] - out[0], (W @ vec).view(1, *SHAPE).expand(4, *SHAPE))
    with pytest.raises(ValueError, match="both with and without"):
        attribute_vector(model, x, torch.ones(10, dtype=torch.bool))
    with pytest.raises(ValueError, match="direction"):
        edit(model, x, torch.zeros(5), scales)


def test_works_for_hvae_layers_and_autoencoders():
    cfg = VAEConfig(latent_dims=(4, 2), hidden_sizes=(8,), layer_hidden=8)
    hv = build_vae(cfg, (1, 8, 8), VAEKind.HVAE)
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    g = torch.Generator().manual_seed(0)
    assert latent_traversal(hv, x[:1], [1], torch.zeros(3), layer=2, generator=g).shape == (1, 3, 1, 8, 8)
    assert interpolate(hv, x[:1], x[1:], 4, "slerp", layer=2, generator=g).shape == (4, 1, 8, 8)
    assert sample_prior(hv, 5, g, temperature=0.5).shape == (5, 1, 8, 8)
    with pytest.raises(ValueError, match="Generator"):
        encode_latent(hv, x, layer=2)
    with pytest.raises(ValueError, match="layer"):
        hv.decode_latent(torch.zeros(1, 2), layer=3)
    ae = build_vae(VAEConfig(latent_dims=(4,), hidden_sizes=(8,)), (1, 8, 8), VAEKind.AE)
    assert interpolate(ae, x[:1], x[1:], 3, "linear").shape == (3, 1, 8, 8)
    with pytest.raises(ValueError, match="cannot sample"):
        sample_prior(ae, 2, g)
    with pytest.raises(ValueError, match="'slerp'"):
        interpolate(ae, x[:1], x[1:], 3, "cubic")
    with pytest.raises(ValueError, match="num_steps"):
        interpolate(ae, x[:1], x[1:], 1)


def test_lerp_endpoints():
    z0, z1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])
    path = lerp(z0, z1, torch.tensor([0.0, 0.25, 1.0]))
    torch.testing.assert_close(path, torch.tensor([[1.0, 0.0], [0.75, 0.75], [0.0, 3.0]]))
    assert not math.isnan(path.sum().item())
