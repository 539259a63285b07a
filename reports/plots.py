"""Plotly figures of a study. Each takes DataFrames and returns one Figure, or None when the
study holds nothing to draw (the page then says why or leaves the figure out)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import hex_to_rgb, qualitative
from plotly.subplots import make_subplots

from reports.paper import normalize_dataset, table6_points
from reports.tables import is_plain, level_key

PALETTE = qualitative.D3 + qualitative.Plotly
LAYOUT = {
    "template": "plotly_white",
    "font": {"size": 13},
    "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
    "legend": {"font": {"size": 11}},
}
# Arms the cost plots name in their legend, each its own trace; more are named on hover.
MAX_LEGEND_ARMS = 12
COST_AXES = {"macs": "multiply-accumulates per image", "params": "parameters"}


def _color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _ordered_arms(trials: pd.DataFrame, factors: Sequence[str]) -> list[str]:
    firsts = trials.drop_duplicates("arm")
    keyed = [(tuple(level_key(r[f]) for f in factors), r["arm"]) for _, r in firsts.iterrows()]
    return [arm for _, arm in sorted(keyed)]


def _layout(fig: go.Figure, height: int, title: str, top: int = 50, **more) -> go.Figure:
    """The common layout; `top` leaves room for the titles of side-by-side panels."""
    margin = {**LAYOUT["margin"], "t": top}
    fig.update_layout(**{**LAYOUT, "margin": margin}, height=height, title=title, **more)
    return fig


def _panels(titles: list[str], traces: list[go.Scatter], cols: list[int]) -> go.Figure:
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles, shared_yaxes=True)
    # One add_traces call: adding traces one by one re-validates the figure each time.
    fig.add_traces(traces, rows=[1] * len(traces), cols=cols)
    return fig


def _band(x, low, high, color: str, group: str) -> go.Scatter:
    fill = "rgba({},{},{},0.15)".format(*hex_to_rgb(color))
    return go.Scatter(
        x=np.concatenate([x, x[::-1]]),
        y=np.concatenate([high, low[::-1]]),
        fill="toself",
        # Without an explicit mode plotly adds markers to short traces.
        mode="lines",
        fillcolor=fill,
        line={"width": 0},
        hoverinfo="skip",
        showlegend=False,
        legendgroup=group,
    )


def training_curves(
    trials: pd.DataFrame, curves: pd.DataFrame, factors: Sequence[str], split_plain: bool
) -> go.Figure | None:
    """Training (dashed) and test error (bold) per arm against iterations, mean over finished
    seeds with a min-max band; with `split_plain`, plain and residual nets side by side
    as in the paper's Fig. 6."""
    done = trials[trials["status"] == "finished"]
    curves = curves[curves["trial_key"].isin(done["trial_key"])]
    if curves.empty:
        return None
    plain = done.drop_duplicates("arm").set_index("arm").get("shortcut", pd.Series()).map(is_plain)
    panels = [("all arms", None)]
    if split_plain and plain.nunique() == 2:
        panels = [("plain nets (shortcut none)", True), ("residual nets", False)]
    summary = curves.groupby(["arm", "metric", "iteration"])["value"].agg(["mean", "min", "max"])
    series = {k: 100 * g.droplevel([0, 1]) for k, g in summary.groupby(level=[0, 1])}
    # One colour per arm across both panels, so a colour never means two arms.
    colors = {arm: _color(i) for i, arm in enumerate(_ordered_arms(done, factors))}
    traces, cols = [], []
    for col, (_, kind) in enumerate(panels, start=1):
        for arm in (a for a in colors if kind is None or plain[a] == kind):
            for key, width, dash in (("train/error", 1.2, "dash"), ("test/error", 3, "solid")):
                if (arm, key) not in series:
                    continue
                s = series[(arm, key)]
                x, color = s.index.to_numpy(), colors[arm]
                hover = f"{arm}<br>{key}: %{{y:.2f}}%<br>iteration %{{x}}<extra></extra>"
                line = {"color": color, "width": width, "dash": dash}
                traces += [
                    _band(x, s["min"].to_numpy(), s["max"].to_numpy(), color, arm),
                    go.Scatter(
                        x=x,
                        y=s["mean"].to_numpy(),
                        mode="lines",
                        name=arm,
                        legendgroup=arm,
                        showlegend=key == "test/error",
                        line=line,
                        hovertemplate=hover,
                    ),
                ]
                cols += [col, col]
    fig = _panels([p[0] for p in panels], traces, cols)
    fig.update_xaxes(title_text="iteration")
    fig.update_yaxes(title_text="error (%)", row=1, col=1)
    title = "Training (thin, dashed) and test (bold) error during training"
    return _layout(fig, 480, title, top=90)


def depth_plot(arms: pd.DataFrame, factors: Sequence[str], dataset: str) -> go.Figure | None:
    """Final training and test error (± std over seeds) against depth, a pair of lines per
    setting of the other factors. The paper's Table 6 is overlaid on CIFAR-10 studies only:
    beside another data set it would invite a meaningless comparison."""
    if arms.empty or "depth" not in arms.columns or arms["depth"].nunique() < 2:
        return None
    others = [f for f in factors if f != "depth"]
    labels = arms.apply(lambda r: " ".join(f"{f}={r[f]}" for f in others) or "all arms", axis=1)
    order = sorted(labels.unique(), key=lambda s: [level_key(v.split("=")[-1]) for v in s.split()])
    fig = go.Figure()
    for i, label in enumerate(order):
        rows = arms[labels == label].sort_values("depth")
        for metric, width, dash in (("train", 1.5, "dash"), ("test", 3, "solid")):
            std = rows[f"{metric}_error_pct_std"].to_numpy()
            fig.add_trace(
                go.Scatter(
                    x=rows["depth"].to_numpy(),
                    y=rows[f"{metric}_error_pct_mean"].to_numpy(),
                    error_y={"type": "data", "array": std, "visible": True},
                    mode="lines+markers",
                    name=f"{label} · {metric}",
                    legendgroup=label,
                    line={"color": _color(i), "width": width, "dash": dash},
                )
            )
    low, high = arms["depth"].min(), arms["depth"].max()
    # Only the paper's depths inside the study's range: ResNet-1202 beside a 20-56 study
    # would squeeze every measured point against the axis.
    points = [(d, e) for d, e in table6_points() if low <= d <= high]
    if normalize_dataset(dataset) == "cifar10" and points:
        depths, errors = zip(*points, strict=True)
        fig.add_trace(
            go.Scatter(
                x=depths,
                y=errors,
                mode="markers",
                name="paper, Table 6: ResNet option A, CIFAR-10 test",
                marker={"symbol": "star", "size": 12, "color": "black"},
            )
        )
    fig.update_xaxes(title_text="depth (weight layers)", type="log" if high / low > 8 else "linear")
    fig.update_yaxes(title_text="final error (%)")
    return _layout(fig, 440, "Final error against depth (mean ± std over seeds)")


def factor_plot(trials: pd.DataFrame, factor: str, factors: Sequence[str]) -> go.Figure | None:
    """Final test error by level of one factor with every finished seed shown; one box per
    combination of the other factors, so depth does not blur a shortcut comparison."""
    if "test/error" not in trials.columns or factor not in trials.columns:
        return None
    done = trials[(trials["status"] == "finished") & trials["test/error"].notna()]
    if done.empty:
        return None
    others = [f for f in factors if f != factor]
    groups = done.groupby([done[f].astype(str) for f in others]) if others else [((), done)]
    groups = sorted(groups, key=lambda item: [level_key(v) for v in item[0]])
    boxes = []
    for i, (key, group) in enumerate(groups):
        name = " ".join(f"{f}={v}" for f, v in zip(others, key, strict=True)) or "all"
        boxes.append(
            go.Box(
                x=group[factor].astype(str).to_numpy(),
                y=100 * group["test/error"].to_numpy(dtype=float),
                name=name,
                boxpoints="all",
                jitter=0.4,
                pointpos=0,
                marker={"color": _color(i), "size": 7},
                line={"width": 1.5},
                text=group["trial_key"].to_numpy(),
                hovertemplate="%{text}<br>test error %{y:.2f}%<extra></extra>",
            )
        )
    fig = go.Figure(data=boxes)
    levels = [str(v) for v in sorted(done[factor].unique(), key=level_key)]
    fig.update_xaxes(
        title_text=factor, type="category", categoryorder="array", categoryarray=levels
    )
    fig.update_yaxes(title_text="final test error (%)")
    return _layout(fig, 400, f"Final test error by {factor} (every seed)", boxmode="group")


def layer_response_plot(
    trials: pd.DataFrame, responses: pd.DataFrame, factors: Sequence[str]
) -> go.Figure | None:
    """Fig. 7: std of each layer's BN output, mean over seeds, in layer order and sorted
    descending; plain nets dashed."""
    merged = responses.merge(trials[["run_id", "arm"]], on="run_id")
    if merged.empty:
        return None
    shortcut = trials.drop_duplicates("arm").set_index("arm").get("shortcut")
    means = merged.groupby(["arm", "layer"])["std"].mean()
    traces = []
    for i, arm in enumerate(_ordered_arms(trials[trials["arm"].isin(merged["arm"])], factors)):
        mean = means.loc[arm]
        plain = shortcut is not None and is_plain(shortcut[arm])
        line = {"color": _color(i), "width": 2, "dash": "dash" if plain else "solid"}
        ranked = np.sort(mean.to_numpy())[::-1]
        for x, y, legend in (
            (mean.index, mean, True),
            (np.arange(1, len(ranked) + 1), ranked, False),
        ):
            traces.append(
                go.Scatter(
                    x=np.asarray(x),
                    y=np.asarray(y),
                    mode="lines",
                    name=arm,
                    legendgroup=arm,
                    showlegend=legend,
                    line=line,
                )
            )
    fig = _panels(["by layer index", "sorted by magnitude"], traces, [1, 2] * (len(traces) // 2))
    fig.update_xaxes(title_text="layer index", row=1, col=1)
    fig.update_xaxes(title_text="rank", row=1, col=2)
    fig.update_yaxes(title_text="std of layer response", row=1, col=1)
    return _layout(fig, 440, "Layer responses (plain dashed, residual solid)", top=90)


def lr_plot(traces: pd.DataFrame, runs: pd.DataFrame) -> go.Figure | None:
    """The learning rate against iteration of each distinct policy setting, as steps.
    `runs` labels the traces (all child runs: a trace may come from a retried attempt)."""
    if traces.empty:
        return None
    info = runs.set_index("run_id")
    fig = go.Figure()
    for i, (run_id, rows) in enumerate(traces.groupby("run_id", sort=False)):
        run = info.loc[run_id]
        label = " ".join(f"{c}={run[c]}" for c in ("lr_policy", "lr", "warmup"))
        if run["lr_policy"] == "plateau":
            label += f" ({run['arm']})"
        fig.add_trace(
            go.Scatter(
                x=rows["iteration"].to_numpy(),
                y=rows["lr"].to_numpy(),
                mode="lines+markers",
                line={"shape": "hv", "color": _color(i), "width": 2},
                name=label,
                showlegend=True,
            )
        )
    fig.update_xaxes(title_text="iteration")
    positive = traces["lr"][traces["lr"] > 0]
    if len(positive) == len(traces) and positive.max() / positive.min() >= 10:
        # Step schedules divide by 10: one tick per decade reads like the paper.
        fig.update_yaxes(title_text="learning rate", type="log", dtick=1)
    else:
        # A cosine schedule reaches 0, which a log axis cannot show.
        fig.update_yaxes(title_text="learning rate")
    return _layout(fig, 380, "Learning-rate schedules used")


def cost_plot(trials: pd.DataFrame, cost: str, factors: Sequence[str]) -> go.Figure | None:
    """Final test error against a cost (`macs` or `params`), as pycls's design-space plots:
    each finished seed a dot, each arm's mean a diamond, both in the arm's one colour, and
    the legend names the arms in those colours. No text labels: arms of equal cost (a
    plain net and its twin with parameter-free shortcuts) sit on one spot, where labels
    overlap. Past MAX_LEGEND_ARMS arms, two traces whatever their number, named on hover
    only: a trace per arm costs plotly a validation each (a second for 100 arms), and a
    100-entry legend reads nothing."""
    if cost not in trials.columns or "test/error" not in trials.columns:
        return None
    done = trials[(trials["status"] == "finished")].copy()
    done["x"] = pd.to_numeric(done[cost], errors="coerce")
    done["y"] = 100 * pd.to_numeric(done["test/error"], errors="coerce")
    done = done[np.isfinite(done["x"]) & np.isfinite(done["y"])]
    if done.empty:
        return None
    fig = go.Figure(data=_cost_traces(done, _ordered_arms(done, factors)))
    axis = COST_AXES.get(cost, cost)
    log = done["x"].min() > 0 and done["x"].max() / done["x"].min() > 8
    fig.update_xaxes(title_text=axis, type="log" if log else "linear")
    fig.update_yaxes(title_text="final test error (%)")
    return _layout(fig, 440, f"Final test error against {axis} (dots: seeds; ◆: arm means)")


def _cost_traces(done: pd.DataFrame, order: list[str]) -> list[go.Scatter]:
    """The seeds' dots and the arms' diamonds of cost_plot: a pair of traces per arm (its
    legend entry), or two in all past MAX_LEGEND_ARMS arms."""
    colors = {arm: _color(i) for i, arm in enumerate(order)}
    means = done.groupby("arm")[["x", "y"]].mean().loc[order]
    counts = done.groupby("arm").size().loc[order]
    legend = len(order) <= MAX_LEGEND_ARMS
    seed_hover = "%{text}<br>test error %{y:.2f}%<br>%{x:.4s}<extra></extra>"
    mean_hover = "%{text}<br>mean of %{customdata} seeds: %{y:.2f}%<br>%{x:.4s}<extra></extra>"

    def seeds(rows: pd.DataFrame, color: str | list[str], group: str | None) -> go.Scatter:
        return go.Scatter(
            x=rows["x"].to_numpy(),
            y=rows["y"].to_numpy(),
            mode="markers",
            name="seeds",
            legendgroup=group,
            showlegend=False,
            marker={"color": color, "size": 6, "opacity": 0.55},
            text=rows["trial_key"].to_numpy(),
            hovertemplate=seed_hover,
        )

    def mean(arms: list[str], color: str | list[str], name: str) -> go.Scatter:
        return go.Scatter(
            x=means.loc[arms, "x"].to_numpy(),
            y=means.loc[arms, "y"].to_numpy(),
            mode="markers",
            name=name,
            legendgroup=name if legend else None,
            showlegend=legend,
            marker={"color": color, "size": 14, "symbol": "diamond", "line": {"width": 1}},
            text=arms,
            customdata=counts.loc[arms].to_numpy(),
            hovertemplate=mean_hover,
        )

    if not legend:
        return [
            seeds(done, done["arm"].map(colors).tolist(), None),
            mean(order, [colors[a] for a in order], "arm mean"),
        ]
    pairs = [(seeds(done[done["arm"] == arm], colors[arm], arm), mean([arm], colors[arm], arm))
             for arm in order]  # fmt: skip
    return [trace for pair in pairs for trace in pair]
