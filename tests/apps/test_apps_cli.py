"""The application verbs end to end on a tiny trained run: each writes its PNGs/npz and prints where."""

import numpy as np
import pytest
from PIL import Image

from elbolab.cli import main

APP_VERBS = ["inpaint", "progressive", "shared-latent", "interpolate", "toy"]


@pytest.mark.parametrize("verb", APP_VERBS)
def test_app_verbs_have_help_with_an_example(verb, capsys):
    with pytest.raises(SystemExit) as e:
        main([verb, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out and f"elbolab {verb}" in out.split("example:")[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("apps") / "run"
    assert main(["train", "ddpm-tiny", "--out", str(run), "--steps", "2"]) == 0
    return run


def _written(out: str) -> list[str]:
    return [line[len("wrote "):] for line in out.splitlines() if line.startswith("wrote ")]


@pytest.mark.slow
def test_app_verbs_on_a_tiny_run(tiny_run, tmp_path, capsys):
    capsys.readouterr()
    # a mask file: white = keep, a black 10 x 10 hole
    mask = np.full((28, 28), 255, np.uint8)
    mask[9:19, 9:19] = 0
    Image.fromarray(mask).save(tmp_path / "mask.png")
    assert main(["inpaint", str(tiny_run), "--index", "0", "1", "--mask", str(tmp_path / "mask.png"), "--samples",
                 "2", "--steps", "6", "--jump-length", "2", "--resample", "2", "--out", str(tmp_path / "in")]) == 0
    files = _written(capsys.readouterr().out)
    assert sorted(f.rsplit("/", 1)[1] for f in files) == ["inpaint.npz", "inpaint.png"]
    with np.load(tmp_path / "in" / "inpaint.npz") as z:
        comp, orig, m = z["completions"], z["originals"], z["mask"]
        assert comp.shape == (2, 2, 1, 28, 28)
        keep = np.broadcast_to(m[:, None] == 1, comp.shape)
        np.testing.assert_array_equal(comp[keep], np.broadcast_to(orig[:, None], comp.shape)[keep])

    assert main(["progressive", str(tiny_run), "--n", "2", "--frames", "3", "--steps", "5",
                 "--out", str(tmp_path / "pr")]) == 0
    assert len(_written(capsys.readouterr().out)) == 3
    assert main(["shared-latent", str(tiny_run), "--index", "2", "--times", "10", "100", "--n", "2", "--steps", "4",
                 "--out", str(tmp_path / "sl")]) == 0
    assert len(_written(capsys.readouterr().out)) == 2
    assert main(["interpolate", str(tiny_run), "--num", "3", "--times", "0", "50", "--steps", "4",
                 "--ddim-steps", "4", "--out", str(tmp_path / "ip")]) == 0
    out = capsys.readouterr().out
    assert len(_written(out)) == 3 and "t=0: 0.000/0.000" in out
    for f in _written(out) + [str(tmp_path / "pr" / "progressive.png")]:
        if f.endswith(".png"):
            assert Image.open(f).size[0] > 28


def test_app_verbs_report_clear_errors(tmp_path, capsys):
    assert main(["inpaint", str(tmp_path / "missing")]) == 5  # ExitCode.RUN_FOLDER
    assert "does not exist" in capsys.readouterr().err
    assert main(["toy", "--frames", "1", "--out", str(tmp_path)]) == 2
    assert "frames" in capsys.readouterr().err
