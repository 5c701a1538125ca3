"""`unlearn-jax demo --quick --diffusion` end to end: every report section and plot, finite in-range
numbers, the same results for the same seed, and an earlier report kept when a run fails."""

import json
import math

import pytest

from unlearn_jax.cli import main
from unlearn_jax.runs import demo as demo_lib


@pytest.fixture(scope="module")
def quick_demo(pretrain_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    assert main(["demo", "--quick", "--diffusion", "--out", str(out), "--quiet"]) == 0
    return out


def _numbers(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}/{i}")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


def test_quick_demo_writes_every_section_and_plot(quick_demo):
    report = (quick_demo / "report.md").read_text()
    for heading in ("## Headline", "## Pitfall 1", "## Pitfall 2", "## Pitfall 3", "## Diffusion", "## Reproduce",
                    "### Wall time per stage"):
        assert heading in report, heading
    for plot in ("relearn", "quant", "changed_codes", "minkpp", "abilities"):
        path = quick_demo / "plots" / f"{plot}.png"
        assert path.stat().st_size > 1000 and f"plots/{plot}.png" in report, plot
    results = json.loads((quick_demo / "results.json").read_text())
    assert set(results["eval"]) == {"original", "gold", *demo_lib.PLANS["quick"].methods}
    for path, value in _numbers({k: v for k, v in results.items() if k != "scores"}):
        assert math.isfinite(value), path
    for path, value in _numbers(results["eval"]):
        if "priv_leak" not in path:
            assert 0 <= value <= 1, (path, value)
    assert results["eval"]["original"]["forget"]["acc"] > results["eval"]["gold"]["forget"]["acc"]
    for name in demo_lib.PLANS["quick"].methods:
        assert results["audit"][name]["overall"] in ("removed", "hidden", "not_forgotten")
        assert (quick_demo / "audits" / name / "report.md").exists()
    assert sum(results["timings"]["stages_s"].values()) <= results["timings"]["wall_s"] + 1
    dm = results["diffusion"]
    assert dm["after"]["ua"]["red"] > dm["before"]["ua"]["red"]
    for grid in ("base", "red", "attack"):
        assert (quick_demo / "diffusion" / grid / "samples.png").stat().st_size > 1000


def test_same_seed_gives_the_same_results(quick_demo, tmp_path):
    again = tmp_path / "again"
    assert main(["demo", "--quick", "--diffusion", "--out", str(again), "--quiet"]) == 0
    first, second = (json.loads((d / "results.json").read_text()) for d in (quick_demo, again))
    first.pop("timings"), second.pop("timings")
    assert first == second


def test_a_failing_demo_keeps_the_previous_report(quick_demo, tmp_path, monkeypatch):
    import shutil

    out = tmp_path / "kept"
    shutil.copytree(quick_demo, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def broken(*args, **kwargs):
        raise RuntimeError("planted failure")

    monkeypatch.setattr(demo_lib, "audit", broken)
    assert main(["demo", "--quick", "--out", str(out), "--quiet"]) == 1
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert not (tmp_path / ".kept.partial").exists()


def test_demo_refuses_a_directory_it_did_not_write(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["demo", "--quick", "--out", str(tmp_path / "mine")]) == 2
    assert "is not a previous demo's output" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
