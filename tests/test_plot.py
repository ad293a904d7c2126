"""Pictures of a rollout: valid SVG and PNG files for every way a rollout ends."""

import argparse
import importlib.util
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import canarykit
from canarykit import ConfigError, Phase
from canarykit.plot import add_plot_option, plot_rollout, rollout_figure
from canarykit.testing import SCENARIOS, simulate

pytest.importorskip("matplotlib", reason="pip install 'canarykit[plot]'")

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "examples" / "policy.toml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SVG = "{http://www.w3.org/2000/svg}"


def run(scenario, **options):
    policy = canarykit.policy.load_policy(POLICY)
    metrics = SCENARIOS[scenario](seed=policy.simulation.seed)
    return simulate(policy.plan, decider=policy.decider, metrics=metrics, **options)


@pytest.fixture(scope="module")
def promoted():
    result = run("healthy")
    assert result.outcome.phase is Phase.SUCCEEDED
    return result


@pytest.fixture(scope="module")
def rolled_back():
    result = run("errors")
    assert result.outcome.phase is Phase.ROLLED_BACK
    return result


@pytest.fixture(scope="module")
def paused():
    result = run("healthy", commands=[(200, "pause", "looks odd")], until=600)
    assert result.outcome.phase is Phase.PAUSED
    return result


def svg_text(path):
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    # With svg.fonttype "path" text is drawn as glyphs; its content stays in comments
    # of the form <!-- rolled back -->, which ElementTree drops, so read the raw file.
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["promoted", "rolled_back", "paused"])
def test_writes_a_valid_svg_for_each_ending(name, request, tmp_path):
    result = request.getfixturevalue(name)
    path = plot_rollout(result, tmp_path / "rollout.svg")
    assert path == tmp_path / "rollout.svg"
    text = svg_text(path)
    label = {"promoted": "promoted", "rolled_back": "rolled back", "paused": "paused"}[name]
    assert f"<!-- {label}" in text  # the end is named in the picture
    for axis_label in ("canary weight (%)", "error rate (%)", "p99 latency (ms)"):
        assert f"<!-- {axis_label} -->" in text


@pytest.mark.parametrize("name", ["promoted", "rolled_back", "paused"])
def test_writes_a_png_for_each_ending(name, request, tmp_path):
    result = request.getfixturevalue(name)
    path = plot_rollout(result.outcome, tmp_path / "rollout.PNG")  # the suffix's case is free
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 10_000  # a drawn figure, not an empty canvas


def test_the_same_rollout_gives_the_same_svg(rolled_back, tmp_path):
    first = plot_rollout(rolled_back, tmp_path / "a.svg").read_bytes()
    second = plot_rollout(rolled_back, tmp_path / "b.svg").read_bytes()
    assert first == second


def test_a_rolled_back_picture_marks_the_failed_verdict_and_the_rollback(rolled_back):
    figure = rollout_figure(rolled_back, title="web")
    weight_axes, error_axes, latency_axes = figure.axes
    texts = [t.get_text() for t in weight_axes.texts]
    assert "rolled back" in texts
    # Rollback started and ended at the same instant: one vertical line each, one label.
    lines_at_end = [
        line
        for line in weight_axes.get_lines()
        if list(line.get_xdata()) == [6.0, 6.0] and line.get_color() == "#d62728"
    ]
    assert len(lines_at_end) == 2
    legend_labels = [t.get_text() for t in figure.legends[0].get_texts()]
    assert "verdict: fail" in legend_labels and "verdict: pass" in legend_labels
    headings = [t.get_text() for t in figure.texts]
    assert headings[0] == "web: rolled back at 6:00"
    assert headings[1] == rolled_back.outcome.reason
    # Each arm's error rate, one point per verdict, in percent.
    verdicts = rolled_back.outcome.verdicts
    stable_line, canary_line = error_axes.get_lines()[:2]
    assert list(canary_line.get_ydata()) == pytest.approx(
        [e.canary_error_rate * 100 for e in verdicts]
    )
    assert list(stable_line.get_ydata()) == pytest.approx(
        [e.stable_error_rate * 100 for e in verdicts]
    )
    canary_p99 = latency_axes.get_lines()[1]
    assert list(canary_p99.get_ydata()) == pytest.approx([e.canary_p99 * 1000 for e in verdicts])


def test_the_weight_follows_the_confirmed_splits(promoted):
    figure = rollout_figure(promoted)
    weight_line = figure.axes[0].get_lines()[0]
    weights = list(weight_line.get_ydata())
    splits = [e.canary_percent for e in promoted.timeline if e.kind == "split"]
    # Every confirmed split appears in order; the line ends at 100% when promoted.
    seen = [w for i, w in enumerate(weights) if i == 0 or w != weights[i - 1]]
    assert seen == sorted(set(splits), key=splits.index)
    assert weights[-1] == 100.0


def test_a_paused_picture_shades_the_pause(paused):
    figure = rollout_figure(paused)
    legend_labels = [t.get_text() for t in figure.legends[0].get_texts()]
    assert "paused" in legend_labels
    assert figure.texts[0].get_text().startswith("paused at 10:00")


def test_a_plan_without_analysis_still_draws(tmp_path):
    result = simulate(canarykit.linear(50, 50, hold=60))
    assert result.outcome.verdicts == ()
    path = plot_rollout(result, tmp_path / "plain.svg")
    assert "<!-- no analysis windows -->" in svg_text(path)


@pytest.mark.parametrize("name", ["rollout.jpg", "rollout", "rollout.svg.txt", "rollout.pdf"])
def test_an_unknown_suffix_is_refused_naming_the_field(promoted, tmp_path, name):
    with pytest.raises(ConfigError) as info:
        plot_rollout(promoted, tmp_path / name)
    assert info.value.field == "path"
    assert "must end in .svg or .png" in str(info.value)
    assert not (tmp_path / name).exists()


def test_something_that_is_not_a_rollout_is_refused(tmp_path):
    with pytest.raises(ConfigError) as info:
        plot_rollout({"phase": "succeeded"}, tmp_path / "x.svg")
    assert info.value.field == "rollout"


def test_plot_option_parses_a_picture_path_and_refuses_others():
    parser = argparse.ArgumentParser(prog="canarykit simulate", exit_on_error=False)
    add_plot_option(parser)
    assert parser.parse_args([]).plot is None
    assert parser.parse_args(["--plot", "out/rollout.svg"]).plot == "out/rollout.svg"
    with pytest.raises(
        argparse.ArgumentError,
        match=r"^argument --plot: must end in \.svg or \.png, got 'rollout.gif'$",
    ):
        parser.parse_args(["--plot", "rollout.gif"])


def test_plot_option_names_the_extra_when_matplotlib_is_missing(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name)
    )
    parser = argparse.ArgumentParser(prog="canarykit simulate", exit_on_error=False)
    add_plot_option(parser)
    with pytest.raises(argparse.ArgumentError, match=r"canarykit\[plot\]"):
        parser.parse_args(["--plot", "rollout.png"])


def test_the_docs_script_draws_both_pictures(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "make_rollout_pictures", ROOT / "docs" / "make_rollout_pictures.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written = module.generate(tmp_path)
    assert [p.name for p in written] == ["rollout-healthy.svg", "rollout-rolled-back.svg"]
    assert "<!-- promoted" in svg_text(written[0])
    assert "<!-- rolled back" in svg_text(written[1])
    # The committed pictures are what the script draws now (byte for byte only with the
    # matplotlib version that drew them: another version draws the same picture in other
    # bytes).
    import matplotlib

    for path in written:
        committed = ROOT / "docs" / "_static" / path.name
        assert committed.exists(), f"{committed} is missing: run docs/make_rollout_pictures.py"
        if f"Matplotlib v{matplotlib.__version__}," in committed.read_text(encoding="utf-8"):
            assert committed.read_bytes() == path.read_bytes(), (
                f"{committed} is stale: run python docs/make_rollout_pictures.py"
            )


def test_without_matplotlib_the_error_names_the_extra(monkeypatch, promoted, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'canarykit\[plot\]'"):
        plot_rollout(promoted, tmp_path / "rollout.svg")
