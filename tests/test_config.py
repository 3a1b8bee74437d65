"""Typed config: TOML round trip, type-checked --set overrides, clear errors, presets in sync with configs/."""

from pathlib import Path

import pytest

from elbolab import config as C

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(C.PRESETS))
def test_toml_round_trip(tmp_path, name):
    cfg = C.preset(name)
    path = tmp_path / "c.toml"
    C.save_toml(cfg, path)
    assert C.load_toml(path) == cfg


@pytest.mark.parametrize("name", sorted(C.PRESETS))
def test_configs_folder_matches_presets(name):
    path = REPO / "configs" / f"{name}.toml"
    assert path.exists(), f"configs/{name}.toml missing: run elbolab.config.write_presets('configs')"
    assert C.load_toml(path) == C.preset(name)


def test_overrides_are_typed():
    cfg = C.apply_overrides(
        C.preset("ddpm-mnist"),
        ["train.lr=1e-3", "unet.channel_mults=[1,2]", "diffusion.prediction=v", "train.steps=7",
         "data.name=fashion-mnist", "train.ema_warmup=false", "train.epochs=2"],
    )
    assert cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)
    assert cfg.unet.channel_mults == (1, 2)
    assert cfg.diffusion.prediction is C.PredictionKind.V
    assert cfg.train.steps == 7 and cfg.data.name == "fashion-mnist"
    assert cfg.train.ema_warmup is False and cfg.train.epochs == 2.0


def test_unknown_key_lists_valid_keys():
    with pytest.raises(C.ConfigError) as e:
        C.apply_overrides(C.preset("ddpm-mnist"), ["train.learning_rate=1"])
    msg = str(e.value)
    assert "learning_rate" in msg and "lr" in msg and "batch_size" in msg


def test_bad_enum_value_lists_choices():
    with pytest.raises(C.ConfigError) as e:
        C.apply_overrides(C.preset("ddpm-mnist"), ["diffusion.prediction=noise"])
    msg = str(e.value)
    assert "diffusion.prediction" in msg and "'noise'" in msg and "'eps'" in msg and "'v'" in msg


@pytest.mark.parametrize(
    "item, fragment",
    [("train.steps=1.5", "train.steps"), ("train.batch_size=0", "batch_size"), ("train.lr=abc", "train.lr"),
     ("unet", "key=value"), ("train=3", "section"), ("diffusion.beta_end=2.0", "beta_end"),
     ("sample.eta=1.5", "eta"), ("unet.channel_mults=[1,0]", "channel_mults")],
)
def test_bad_values_name_the_field(item, fragment):
    with pytest.raises(C.ConfigError, match=fragment):
        C.apply_overrides(C.preset("ddpm-mnist"), [item])


def test_load_toml_errors_name_the_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[train]\nlr = 'fast'\n")
    with pytest.raises(C.ConfigError, match="bad.toml.*train.lr"):
        C.load_toml(p)
    p.write_text("[train\n")
    with pytest.raises(C.ConfigError, match="invalid TOML"):
        C.load_toml(p)
    with pytest.raises(C.ConfigError, match="does not exist"):
        C.load_toml(tmp_path / "missing.toml")


def test_unknown_preset():
    with pytest.raises(C.ConfigError, match="ddpm-mnist"):
        C.load_run_config("ddpm-mnits")
