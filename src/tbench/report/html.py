"""`report.html`: one self-contained file (plotly.js inlined, no network) rendered from a `Report`.

Charts come from plotly, the page from a jinja2 template with autoescaping; nothing here computes a
statistic, it only lays out what `run_report.build_report` measured.
"""

from __future__ import annotations

import contextlib
import re
from functools import cache

import numpy as np
import plotly.graph_objects as go
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape
from plotly.colors import qualitative
from plotly.offline import get_plotlyjs

from tbench.fsutil import atomic_write_text
from tbench.models.grading import rate_text
from tbench.models.layout import IterationPaths
from tbench.report.markdown import outage_text
from tbench.report.pages import trials_page
from tbench.report.view import Report, TrialView
from tbench.stats.inference import IterationStat

_PLOT_CONFIG = {"displaylogo": False, "responsive": True}
_PALETTE = qualitative.Plotly
_LAYOUT = {
    "height": 340,
    "margin": {"l": 60, "r": 20, "t": 30, "b": 50},
    "template": "plotly_white",
    "legend": {"orientation": "h", "y": 1.12},
    "hovermode": "x unified",
}


@cache
def _env() -> Environment:
    env = Environment(loader=PackageLoader("tbench.report", "templates"), autoescape=select_autoescape(["j2"]))
    env.filters["pct"] = lambda x, digits=1: rate_text(x, digits)
    env.filters["pp"] = lambda x: "—" if x is None else f"{x * 100:+.1f} pp"
    env.filters["money"] = lambda x, digits=4: "—" if x is None else f"${x:.{digits}f}"
    env.filters["num"] = lambda x: "—" if x is None else f"{x:,.0f}"
    env.filters["code"] = _code
    env.filters["outage"] = outage_text
    return env


def _code(text: str) -> Markup:
    """Escape, then show `backticked` names (the reports share sentences with report.md) as <code>."""
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text))))


@cache
def _plotlyjs() -> Markup:
    return Markup(get_plotlyjs())


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _div(fig: go.Figure, div_id: str) -> Markup:
    html = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=_PLOT_CONFIG)
    return Markup(html)


def trend_chart(report: Report) -> go.Figure:
    """Pass rate per iteration with its Wilson band; one line per model in mixed runs; the baseline dashed."""
    series: dict[str, list[IterationStat]] = report.model_iterations or {"all trials": report.stats.iterations}
    fig = go.Figure()
    for n, (name, its) in enumerate(series.items()):
        its = [i for i in its if i.rate.rate is not None and i.rate.interval is not None]
        colour = _PALETTE[n % len(_PALETTE)]
        x = [i.iteration for i in its]
        low = [i.rate.interval.low for i in its if i.rate.interval]
        high = [i.rate.interval.high for i in its if i.rate.interval]
        fig.add_trace(
            go.Scatter(
                x=x + x[::-1],
                y=high + low[::-1],
                fill="toself",
                mode="lines",
                fillcolor=_rgba(colour, 0.18),
                line={"width": 0},
                hoverinfo="skip",
                name=f"{name} 95% CI",
                showlegend=False,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[i.rate.rate for i in its],
                mode="lines+markers",
                name=name,
                line={"color": colour},
                customdata=[[i.rate.passed, i.rate.graded, lo, hi] for i, lo, hi in zip(its, low, high, strict=True)],
                hovertemplate="%{y:.1%} (%{customdata[0]}/%{customdata[1]}), "
                "95% CI %{customdata[2]:.1%} to %{customdata[3]:.1%}<extra>" + name + "</extra>",
            )
        )
    c = report.vs_baseline
    if c is not None and c.rate_a is not None:
        fig.add_hline(
            y=c.rate_a,
            line={"dash": "dash", "color": "#555"},
            annotation_text=f"baseline {c.rate_a:.0%} ({c.label_a})",
            annotation_position="bottom right",
        )
    fig.update_layout(
        **_LAYOUT,
        yaxis={"range": [-0.02, 1.02], "tickformat": ".0%", "title": "pass rate"},
        xaxis={"title": "iteration", "dtick": 1 if len(report.iterations) <= 20 else None},
    )
    return fig


def duration_chart(report: Report) -> go.Figure:
    """Trial durations per iteration (box: median, quartiles, outliers), per model."""
    fig = go.Figure()
    groups: dict[str, list[tuple[int, float]]] = {}
    for its in report.trials_by_iteration.values():
        for v in its:
            groups.setdefault(v.model, []).append((v.iteration, v.duration_s))
    for n, (model, points) in enumerate(sorted(groups.items())):
        xy = np.array(points)  # arrays, not lists: plotly validates lists element by element
        fig.add_trace(
            go.Box(
                x=xy[:, 0].astype(int),
                y=xy[:, 1],
                name=model,
                marker={"color": _PALETTE[n % len(_PALETTE)]},
                boxpoints="outliers",
            )
        )
    fig.update_layout(
        **{**_LAYOUT, "hovermode": "closest"},
        boxmode="group",
        yaxis={"title": "trial duration (s)", "rangemode": "tozero"},
        xaxis={"title": "iteration"},
    )
    return fig


def cost_chart(report: Report) -> go.Figure | None:
    """Cost per iteration where any trial reported one, else tokens; None when neither was measured."""
    use_cost = report.stats.cost.cost_usd is not None
    if not use_cost and report.stats.cost.tokens == 0:
        return None
    series: dict[str, list[IterationStat]] = report.model_iterations or {"all trials": report.stats.iterations}
    fig = go.Figure()
    for n, (name, its) in enumerate(series.items()):
        fig.add_trace(
            go.Bar(
                x=[i.iteration for i in its],
                y=[(i.cost_usd or 0.0) if use_cost else i.tokens for i in its],
                name=name,
                marker={"color": _PALETTE[n % len(_PALETTE)]},
            )
        )
    fig.update_layout(
        **_LAYOUT,
        barmode="stack",
        yaxis={"title": "cost (USD)" if use_cost else "tokens", "tickprefix": "$" if use_cost else ""},
        xaxis={"title": "iteration"},
    )
    return fig


def _grid_rows(report: Report) -> Markup:
    """The task x iteration grid's rows. Built here rather than in the template: at 100 iterations x 89 tasks
    it is 8,900 linked cells, and a jinja loop over them costs most of the 3-second budget."""
    out = []
    for row in report.grid:
        label = escape(row.task_id) + (Markup(" · ") + escape(row.model) if report.mixed else "")
        flaky = Markup(' <span class="flaky" title="flaky">~</span>') if row.flaky else ""
        cells = "".join(
            "<td>"
            + "".join(
                f'<a class="m {v.cell}" href="{escape(v.page or v.log)}" title="{escape(v.title)}">{v.mark}</a>'
                for v in cell
            )
            + "</td>"
            for cell in row.cells
        )
        rate = rate_text(row.rate, 0)
        out.append(
            f'<tr id="row-{escape(row.task_id)}-{escape(row.model)}"><td class="task">{label}{flaky}</td>'
            f'{cells}<td class="r">{rate}</td></tr>'
        )
    return Markup("\n".join(out))


def _trial_rows(views: list[TrialView], mixed: bool) -> Markup:
    """One iteration's rows of the Trials table, with links to each trial's files (built here for speed too)."""
    out = []
    for v in views:
        links = [
            f'<a href="{escape(href)}">{name}</a>'
            for name, href in (
                ("page", v.page),
                ("log", v.log),
                ("tests", v.tests),
                ("trajectory.json", v.trajectory),
                ("agent/", v.agent),
            )
            if href
        ]
        model = f"<td>{escape(v.model)}</td>" if mixed else ""
        cost = "—" if v.cost_usd is None else f"${v.cost_usd:.4f}"
        out.append(
            f'<tr><td>{escape(v.task_id)}</td>{model}<td><span class="o {v.cell}">{v.cell}</span></td>'
            f'<td>{escape(v.failure_mode or "")}</td><td class="r">{v.duration_s:.1f} s</td>'
            f'<td class="r">{v.tokens:,}</td><td class="r">{cost}</td><td>{" · ".join(links)}</td></tr>'
        )
    return Markup("\n".join(out))


def write_trials_pages(report: Report) -> None:
    """Each iteration's table of trials, as its own page (`iterations/NNN/trials.html`): rewritten only where
    the iteration's results.json is newer, so a long run does not rewrite every page after each iteration."""
    for i, views in report.trials_by_iteration.items():
        paths = IterationPaths(report.run_dir / "iterations" / f"{i:03d}")
        with contextlib.suppress(OSError):
            if paths.trials_page.stat().st_mtime >= paths.results.stat().st_mtime:
                continue
        stat = next((it for it in report.stats.iterations if it.iteration == i), None)
        line = "" if stat is None else f"{stat.rate.passed}/{stat.rate.graded} passed ({rate_text(stat.rate.rate)})"
        if stat is not None and stat.rate.infra_errors:
            line += f", {stat.rate.infra_errors} not graded"
        page = trials_page(report.config.run_id, i, line, _trial_rows(views, report.mixed), report.mixed)
        atomic_write_text(paths.trials_page, page)


def render_html(report: Report) -> str:
    charts = {
        "trend": _div(trend_chart(report), "chart-trend"),
        "durations": _div(duration_chart(report), "chart-durations"),
    }
    cost = cost_chart(report)
    if cost is not None:
        charts["cost"] = _div(cost, "chart-cost")
    kind, sentence = report.headline
    return (
        _env()
        .get_template("report.html.j2")
        .render(
            r=report,
            s=report.stats,
            charts=charts,
            plotlyjs=_plotlyjs(),
            headline_kind=kind,
            headline=sentence,
            grid_rows=_grid_rows(report),
        )
    )
