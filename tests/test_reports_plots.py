"""The error-against-compute plots: every finished seed and each arm's mean, one colour per
arm in its dots, its diamond and its legend entry, and no text labels to overlap."""

import numpy as np
import pytest
import report_fixtures as rf

from reports.data import select_trials
from reports.plots import MAX_LEGEND_ARMS, cost_plot
from reports.tables import arm_table


def test_cost_plots_show_every_seed_and_each_arm_in_one_colour_with_its_legend():
    # Shortcut none and A at one depth cost the same: their means share a spot.
    spec = rf.complete_study()
    data = rf.study_data(spec)
    trials = select_trials(data.runs)
    arms = arm_table(trials, data.info).set_index("arm")
    errors = rf.seed_errors(spec)
    for cost in ("macs", "params"):
        fig = cost_plot(trials, cost, ["depth", "shortcut"])
        seeds = [t for t in fig.data if not t.showlegend]
        means = [t for t in fig.data if t.showlegend]
        # One legend entry per arm, in the paper's order, and no text on the plot.
        assert [t.name for t in means] == list(arms.index)
        assert all(t.mode == "markers" for t in fig.data)
        colours = {t.name: t.marker.color for t in means}
        assert len(set(colours.values())) == 4  # no two arms share a colour
        for trace in means:
            assert trace.marker.symbol == "diamond" and isinstance(trace.marker.color, str)
            assert trace.y[0] == pytest.approx(np.mean(errors[trace.name]))
            assert trace.x[0] == pytest.approx(arms.loc[trace.name, cost])
        # Each arm's seeds: its own colour, in its legend group (the legend toggles both).
        assert sorted(v for t in seeds for v in t.y) == pytest.approx(
            sorted(v for values in errors.values() for v in values)
        )
        for trace in seeds:
            assert trace.marker.color == colours[trace.legendgroup]
            assert {key.rsplit(" seed=", 1)[0] for key in trace.text} == {trace.legendgroup}
    assert cost_plot(trials.drop(columns="macs"), "macs", ["depth"]) is None


def test_cost_plot_of_many_arms_stays_two_traces_named_on_hover():
    trials = rf.grid_trials({"depth": [20, 32, 44, 56], "width": [8, 16, 32, 64]}, seeds=[0])
    spec = rf.StudySpec("wide", "q", ["depth", "width"], {}, [0], trials)
    data = rf.study_data(spec)
    fig = cost_plot(select_trials(data.runs), "params", ["depth", "width"])
    assert 16 > MAX_LEGEND_ARMS
    assert len(fig.data) == 2 and not any(t.showlegend for t in fig.data)
    seeds, means = fig.data
    assert means.mode == "markers" and len(means.x) == 16 and len(set(means.marker.color)) > 1
    # Still one colour per arm: a seed has its arm mean's colour.
    colours = dict(zip(means.text, means.marker.color, strict=True))
    for key, colour in zip(seeds.text, seeds.marker.color, strict=True):
        assert colours[key.rsplit(" seed=", 1)[0]] == colour
