"""The CLI end to end: every verb documents an example, errors are clear, a tiny run trains, samples, evaluates."""

import json

import numpy as np
import pytest
from PIL import Image

from elbolab.cli import build_parser, main
from elbolab.errors import ExitCode

VERBS = [["data", "info"], ["train"], ["sample"], ["eval"], ["demo"]]


@pytest.mark.parametrize("verb", VERBS, ids=lambda v: " ".join(v))
def test_every_verb_has_help_with_an_example(verb, capsys):
    with pytest.raises(SystemExit) as e:
        main([*verb, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out and "elbolab " + verb[0] in out.split("example:")[1]


def test_parser_lists_all_verbs():
    sub = next(a for a in build_parser()._actions if a.dest == "verb")
    assert {"data", "train", "sample", "eval", "demo"} <= set(sub.choices)


def test_data_info_embedded(capsys):
    assert main(["data", "info", "mnist-embedded"]) == 0
    out = capsys.readouterr().out
    assert "10000" in out.replace(",", "") or "9000" in out.replace(",", "")


def test_bad_preset_is_a_clear_error(capsys, tmp_path):
    assert main(["train", "ddpm-mnits", "--out", str(tmp_path / "r")]) == ExitCode.CONFIG
    err = capsys.readouterr().err
    assert "ddpm-mnits" in err and "ddpm-mnist" in err


def test_bad_override_is_a_clear_error(capsys, tmp_path):
    assert main(["train", "ddpm-tiny", "--out", str(tmp_path / "r"), "--set", "train.lrate=1"]) == ExitCode.CONFIG
    err = capsys.readouterr().err
    assert "lrate" in err and "valid keys" in err


def test_sample_missing_run_is_a_clear_error(capsys, tmp_path):
    assert main(["sample", str(tmp_path / "nope")]) == ExitCode.RUN_FOLDER
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_run_trains_samples_and_evaluates(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "ddpm-tiny", "--out", str(run), "--steps", "4", "--set", "train.checkpoint_every=2",
                 "--set", "train.log_every=2"]) == 0
    for name in ("config.toml", "model.safetensors", "ema.safetensors", "metrics.jsonl", "checkpoint.json"):
        assert (run / name).exists(), name
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert lines and all(np.isfinite(r["loss"]) for r in lines)

    # resume continues from step 4 to 6
    assert main(["train", "ddpm-tiny", "--out", str(run), "--steps", "6", "--resume"]) == 0
    assert json.loads((run / "checkpoint.json").read_text())["step"] == 6

    grid = tmp_path / "grid.png"
    assert main(["sample", str(run), "--n", "4", "--steps", "3", "--seed", "1", "--out", str(grid)]) == 0
    img = np.asarray(Image.open(grid))
    assert img.ndim == 2 and img.shape[0] >= 2 * 28
    with np.load(tmp_path / "grid.npz") as z:
        assert z["images"].shape == (4, 1, 28, 28) and z["images"].dtype == np.uint8
        first = z["images"].copy()
    # same seed, same samples
    assert main(["sample", str(run), "--n", "4", "--steps", "3", "--seed", "1", "--out", str(grid)]) == 0
    with np.load(tmp_path / "grid.npz") as z:
        np.testing.assert_array_equal(z["images"], first)

    assert main(["eval", str(run), "--bpd", "--bpd-n", "8"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    text = json.dumps(metrics)
    assert "reconstruction" in text and "denoising" in text
    out = capsys.readouterr().out
    assert "bits/dim" in out

    # the family's samplers and their options, on the CLI
    for sampler in ("dpmpp-2m", "heun", "euler", "ancestral"):
        assert main(["sample", str(run), "--n", "2", "--sampler", sampler, "--steps", "3", "--device", "cpu",
                     "--out", str(tmp_path / f"{sampler}.png")]) == 0, sampler
        with np.load(tmp_path / f"{sampler}.npz") as z:
            assert json.loads(str(z["meta"]))["method"].startswith(sampler)
    assert main(["sample", str(run), "--n", "2", "--sampler", "ddim", "--option", "eta=1", "--option", "spacing=trailing",
                 "--out", str(tmp_path / "e.png")]) == 0
    capsys.readouterr()
    assert main(["sample", str(run), "--n", "2", "--sampler", "ancestral", "--eta", "0.5",
                 "--out", str(tmp_path / "x.png")]) != 0
    err = capsys.readouterr().err
    assert "no option 'eta'" in err and "its options: steps, spacing, clip_x0" in err and "dpmpp-2m" in err
    assert main(["sample", str(run), "--n", "2", "--sampler", "annealed_langevin", "--out", str(tmp_path / "x.png")]) != 0
    assert "not a sampler of family 'ddpm'; choices: ancestral, ddim, euler" in capsys.readouterr().err
    assert main(["sample", str(run), "--n", "2", "--device", "tpu", "--out", str(tmp_path / "x.png")]) != 0
    assert "--device 'tpu'" in capsys.readouterr().err
