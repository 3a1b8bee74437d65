"""Typed config: TOML presets (the single source, shipped in the package), round trips, type-checked --set
overrides with the family's own sections and sampler options, clear errors, run-format-1 configs."""

import dataclasses
import sys
from pathlib import Path

import pytest

from elbolab import config as C
from elbolab.diffusion.config import PredictionKind
from elbolab.families import get_family

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PACKAGE_PRESETS = REPO / "src" / "elbolab" / "configs"
PRESETS = sorted(p.stem for p in PACKAGE_PRESETS.glob("*.toml"))


def test_the_presets_are_the_toml_files_of_the_package():
    package = PACKAGE_PRESETS
    assert set(PRESETS) <= set(C.preset_names()) and len(PRESETS) >= 11
    assert (REPO / "configs").resolve() == package.resolve()  # configs/ is the package folder itself
    assert C.preset_path("ddpm-mnist").parent.resolve() == package.resolve()


@pytest.mark.parametrize("name", PRESETS)
def test_toml_round_trip(tmp_path, name):
    cfg = C.preset(name)
    path = tmp_path / "c.toml"
    C.save_toml(cfg, path)
    assert C.load_toml(path) == cfg


@pytest.mark.parametrize("name", PRESETS)
def test_a_preset_holds_only_what_its_family_reads(name):
    data = tomllib.loads(C.preset_path(name).read_text())
    family = get_family(data["family"])
    assert set(data) <= {"family", "data", "train", "sample", "model"}
    assert set(data["model"]) <= {f.name for f in dataclasses.fields(family.config_cls)}  # defaults may be left out
    assert set(data["sample"]) - set(C._SAMPLE_KEYS) <= set(family.samplers)  # the scalar keys, then samplers


def test_overrides_are_typed_with_or_without_the_model_prefix():
    cfg = C.apply_overrides(
        C.preset("ddpm-mnist"),
        ["train.lr=1e-3", "unet.channel_mults=[1,2]", "model.diffusion.prediction=x0", "diffusion.prediction=v",
         "train.steps=7", "data.name=fashion-mnist", "train.ema_warmup=false", "train.epochs=2",
         "sample.ddim.eta=0.5", "sample.sampler=ancestral", "sample.ancestral.steps=9"],
    )
    assert cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)
    assert cfg.model.unet.channel_mults == (1, 2)
    assert cfg.model.diffusion.prediction is PredictionKind.V  # the later override wins
    assert cfg.train.steps == 7 and cfg.data.name == "fashion-mnist"
    assert cfg.train.ema_warmup is False and cfg.train.epochs == 2.0
    assert cfg.sample.sampler == "ancestral" and cfg.sample.options["ancestral"].steps == 9
    assert cfg.sample.options["ddim"].eta == 0.5


def test_switching_family_starts_from_its_defaults():
    cfg = C.apply_overrides(C.preset("ddpm-tiny"), ["family=vae", "vae.latent_dims=[3]"])
    assert cfg.family == "vae" and cfg.model.vae.latent_dims == (3,) and cfg.sample.sampler == "prior"
    assert cfg.data == C.preset("ddpm-tiny").data


def test_unknown_key_lists_valid_keys():
    with pytest.raises(C.ConfigError) as e:
        C.apply_overrides(C.preset("ddpm-mnist"), ["train.learning_rate=1"])
    msg = str(e.value)
    assert "learning_rate" in msg and "lr" in msg and "batch_size" in msg


def test_a_key_of_another_family_names_the_family_and_its_sections():
    with pytest.raises(C.ConfigError) as e:
        C.apply_overrides(C.preset("ddpm-mnist"), ["vae.beta=2"])
    msg = str(e.value)
    assert "'vae'" in msg and "'ddpm'" in msg and "unet" in msg and "diffusion" in msg
    with pytest.raises(C.ConfigError, match="unknown key.*score.*valid keys: .*diffusion.*unet"):
        C.apply_overrides(C.preset("ddpm-mnist"), ["model.score.eps=1"])


def test_sampler_options_are_checked_against_the_family():
    with pytest.raises(C.ConfigError, match="sample.ddim.eta = 1.5 must be in"):
        C.apply_overrides(C.preset("ddpm-mnist"), ["sample.ddim.eta=1.5"])
    with pytest.raises(C.ConfigError, match="'annealed_langevin' is not a key of \\[sample\\] nor a sampler of family "
                                            "'ddpm'.*samplers: ancestral, ddim, euler, heun, dpmpp-2m, dpmpp-2m-sde, langevin, pc"):
        C.apply_overrides(C.preset("ddpm-mnist"), ["sample.annealed_langevin.steps=3"])
    with pytest.raises(C.ConfigError, match="sample.sampler = 'prior' is not a sampler of family 'ddpm'"):
        C.apply_overrides(C.preset("ddpm-mnist"), ["sample.sampler=prior"])
    with pytest.raises(C.ConfigError, match="unknown key.*eta.*sample.ancestral.*clip_x0, spacing, steps"):
        C.apply_overrides(C.preset("ddpm-mnist"), ["sample.ancestral.eta=0.5"])


def test_bad_enum_value_lists_choices():
    with pytest.raises(C.ConfigError) as e:
        C.apply_overrides(C.preset("ddpm-mnist"), ["diffusion.prediction=noise"])
    msg = str(e.value)
    assert "diffusion.prediction" in msg and "'noise'" in msg and "'eps'" in msg and "'v'" in msg


@pytest.mark.parametrize(
    "item, fragment",
    [("train.steps=1.5", "train.steps"), ("train.batch_size=0", "batch_size"), ("train.lr=abc", "train.lr"),
     ("unet", "key=value"), ("train=3", "section"), ("diffusion.beta_end=2.0", "beta_end"),
     ("sample.ddim.eta=1.5", "eta"), ("unet.channel_mults=[1,0]", "channel_mults"), ("family=flow", "flow"),
     ("train.lr_schedule=step", "'constant', 'cosine', 'linear'"), ("train.lr_min_ratio=2", "lr_min_ratio"),
     ("sample.n=0", "sample.n"), ("data.on_error=ignore", "'fail', 'skip'"), ("data.channels=2", "data.channels"),
     ("unet.input_fourier=true", None), ("sample.dpmpp-2m-sde.eta=2", "eta = 2.0 must be in"),
     ("sample.heun.S_churn=-1", "S_churn = -1.0 must be >= 0"), ("sample.euler.spacing=cosine", "'logsnr', 'karras', 'angle'"),
     ("train.tensorboard=maybe", "train.tensorboard")],
)
def test_bad_values_name_the_field(item, fragment):
    if fragment is None:  # a valid value of a new option: accepted
        C.apply_overrides(C.preset("ddpm-mnist"), [item])
        return
    with pytest.raises(C.ConfigError, match=fragment):
        C.apply_overrides(C.preset("ddpm-mnist"), [item])


@pytest.mark.parametrize("item, fragment", [
    ("gan.r1_gamma=-1", "gan.r1_gamma = -1.0 must be >= 0"), ("gan.loss=squared", "'hinge'"),
    ("gan.spectral_norm=1", "gan.spectral_norm"), ("unet.num_classes=3", "family 'gan' also takes its model sections.*: gan")])
def test_bad_gan_values_name_the_field(item, fragment):
    with pytest.raises(C.ConfigError, match=fragment):
        C.apply_overrides(C.preset("gan-sn-hinge-mnist"), [item])


def test_load_toml_errors_name_the_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[train]\nlr = 'fast'\n")
    with pytest.raises(C.ConfigError, match="bad.toml.*train.lr"):
        C.load_toml(p)
    p.write_text("[train\n")
    with pytest.raises(C.ConfigError, match="invalid TOML"):
        C.load_toml(p)
    p.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(C.ConfigError, match="not a text file"):
        C.load_toml(p)
    with pytest.raises(C.ConfigError, match="does not exist"):
        C.load_toml(tmp_path / "missing.toml")
    p.write_text('family = "flow"\n')
    with pytest.raises(C.ConfigError, match="'flow' is not a registered family; choices: ae, ddpm, gan, hvae"):
        C.load_toml(p)


def test_unknown_preset():
    with pytest.raises(C.ConfigError, match="ddpm-mnist"):
        C.load_run_config("ddpm-mnits")


def test_run_format_1_config_upgrades(tmp_path):
    """A config.toml written by elbolab 0.1 (every family's sections at the top level) reads as today's."""
    old = REPO / "tests" / "fixtures" / "runs_v1" / "ddpm-v1" / "config.toml"
    cfg = C.load_toml(old)
    assert cfg.family == "ddpm" and cfg.model.unet.base_channels == 4 and cfg.model.diffusion.T == 100
    assert cfg.sample.sampler == "ddim" and cfg.sample.options["ddim"].steps == 10
    assert cfg.sample.options["ancestral"].steps == 10  # format 1's steps applied to whichever sampler ran
    vae = C.load_toml(REPO / "tests" / "fixtures" / "runs_v1" / "vae-v1" / "config.toml")
    assert vae.family == "vae" and vae.model.vae.hidden_sizes == (16,) and vae.sample.sampler == "prior"
    ncsn_v1 = old.read_text().replace('family = "ddpm"', 'family = "ncsn"').replace("p_uncond = 0.1", "p_uncond = 0.2")
    (tmp_path / "n.toml").write_text(ncsn_v1)
    ncsn = C.load_toml(tmp_path / "n.toml")
    assert ncsn.model.score.p_uncond == 0.2 and ncsn.sample.sampler == "annealed_langevin"
    assert ncsn.sample.options["annealed_langevin"].steps == 0  # format 1 ignored [sample] steps for NCSN


@pytest.mark.parametrize("item, fragment", [
    ("vae.activation=sigmoid", "vae.activation.*'tanh'"), ("vae.layer_depth=0", "vae.layer_depth = 0 must be > 0")])
def test_bad_vae_values_name_the_field(item, fragment):
    with pytest.raises(C.ConfigError, match=fragment):
        C.apply_overrides(C.preset("hvae-burda-mnist"), [item])


def test_parse_options_reads_toml_scalars_and_names_a_bad_item():
    assert C.parse_options(["eta=0.5", "steps=25", "spacing=angle", "clip_x0=false"]) == {
        "eta": 0.5, "steps": 25, "spacing": "angle", "clip_x0": False}
    assert C.parse_options(None) == {}
    for bad in ("eta", "=3"):
        with pytest.raises(C.ConfigError, match=f"--option '{bad}': expected key=value"):
            C.parse_options([bad])
