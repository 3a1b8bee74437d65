"""elbolab.host: the machine a benchmark JSON or demo.json records beside its figures."""

import torch

from elbolab.host import cpu_name, host_info


def test_host_info_names_the_cpu_cores_and_threads(monkeypatch):
    info = host_info()
    assert set(info) == {"cpu", "cores", "torch_threads"}
    assert isinstance(info["cpu"], str) and info["cpu"] and info["cores"] >= 1
    assert info["torch_threads"] == torch.get_num_threads()
    # without /proc/cpuinfo it falls back to platform.processor(), then "unknown", never raises
    monkeypatch.setattr("elbolab.host.Path.read_text", lambda self: (_ for _ in ()).throw(OSError("no procfs")))
    monkeypatch.setattr("elbolab.host.platform.processor", lambda: "")
    assert cpu_name() == "unknown"
