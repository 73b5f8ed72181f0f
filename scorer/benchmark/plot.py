"""Figure of a routing benchmark report: each method's cost-quality curve, the single models and the oracle.

Without costs there is no curve: the figure is then a bar chart of quality per method, with the single
models beside them and the best single model and the oracle as lines. matplotlib is imported here only,
with the Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_online", "plot_report"]


def _short(model: str) -> str:
    return model.rsplit("/", 1)[-1]


def plot_report(report: dict[str, Any], path: str | Path, title: str | None = None) -> Path:
    """Write the report's figure as a PNG to `path` and return the path.

    Raises:
        ModuleNotFoundError: matplotlib is not installed.
    """
    plt, out = _pyplot(path)
    setup = report["setup"]
    heading = title or f"routing: {setup.get('test_queries', '?')} test queries, seed {setup.get('seed', '?')}"
    bs, orc = report["best_single"], report["oracle"]
    if setup.get("has_costs"):
        fig, ax = plt.subplots(figsize=(10, 6.5), dpi=130)
        cmap = plt.get_cmap("tab10")
        for i, (name, m) in enumerate(report["methods"].items()):
            pts = sorted((p["cost"], p["quality"]) for p in m["curve"] if p["cost"] is not None)
            if not pts:
                continue
            label = f"{name} (AIQ {m['aiq']:.3f})" if m.get("aiq") is not None else name
            ax.plot(*zip(*pts, strict=True), "-o", ms=2.5, lw=1.4, color=cmap(i % 10), label=label)
        for model, info in report["models"].items():
            if info["cost"] is None:
                continue
            is_best = model == bs["model"]
            ax.scatter(info["cost"], info["quality"], marker="s", s=40 if is_best else 22, color="black", zorder=3)
            ax.annotate(
                _short(model),
                (info["cost"], info["quality"]),
                textcoords="offset points",
                xytext=(4, -9 if is_best else 3),
                fontsize=7,
                fontweight="bold" if is_best else "normal",
            )
        if orc["cost"] is not None:
            ax.scatter(orc["cost"], orc["quality"], marker="*", s=160, color="gold", edgecolor="black", zorder=4)
            ax.annotate("oracle", (orc["cost"], orc["quality"]), textcoords="offset points", xytext=(6, 0), fontsize=8)
        ax.axhline(bs["quality"], color="grey", ls=":", lw=1)
        ax.axvline(bs["cost"], color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("mean cost per query (US$, log scale)")
        ax.set_ylabel("mean quality")
        # Upper left is empty in a cost-quality plot: cheap and good is where no single model sits.
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, 0.93))
        ax.grid(alpha=0.3, which="both")
    else:
        entries = [(name, m["quality"], "method") for name, m in report["methods"].items()]
        entries += [(_short(model), info["quality"], "model") for model, info in report["models"].items()]
        entries.sort(key=lambda e: e[1])
        fig, ax = plt.subplots(figsize=(9, 0.35 * len(entries) + 1.8), dpi=130)
        colours = ["tab:blue" if kind == "method" else "lightgrey" for _, _, kind in entries]
        ax.barh([e[0] for e in entries], [e[1] for e in entries], color=colours, edgecolor="black", lw=0.4)
        for y, (_, q, _) in enumerate(entries):
            ax.text(q + 0.003, y, f"{q:.3f}", va="center", fontsize=7)
        ax.axvline(bs["quality"], color="black", ls=":", lw=1, label=f"best single ({_short(bs['model'])})")
        ax.axvline(orc["quality"], color="goldenrod", ls="--", lw=1.2, label="oracle")
        ax.set_xlabel("mean quality (no costs in this data: routing on predicted quality alone)")
        ax.set_xlim(0, max(1.0, orc["quality"] + 0.05))
        ax.legend(fontsize=8, loc="lower right")
        ax.tick_params(axis="y", labelsize=8)
    ax.set_title(heading, fontsize=10)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_online(
    report: dict[str, Any], path: str | Path, title: str | None = None, target: float | None = None
) -> Path | None:
    """Write the online replays' curves (gap recovered against queries seen) as a PNG; None without any.

    Each replay draws two lines: the gap on the first n queries as they were routed (solid), and the gap
    of the policy frozen at n on the queries after it (dashed). `target`, if given, is drawn as a line.

    Raises:
        ModuleNotFoundError: matplotlib is not installed.
    """
    replays = {name: m["online"]["curve"] for name, m in report["methods"].items() if "online" in m}
    if not replays:
        return None
    plt, out = _pyplot(path)
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=130)
    cmap = plt.get_cmap("tab10")
    for i, (name, curve) in enumerate(replays.items()):
        seen = [(p["n"], 100 * p["seen_gap"]) for p in curve if p.get("seen_gap") is not None]
        rest = [(p["n"], 100 * p["rest_gap"]) for p in curve if p.get("rest_gap") is not None]
        if seen:
            ax.plot(*zip(*seen, strict=True), "-o", ms=3, color=cmap(i % 10), label=f"{name}, as routed")
        if rest:
            ax.plot(*zip(*rest, strict=True), "--", lw=1, color=cmap(i % 10), label=f"{name}, frozen at n, on the rest")
    ax.axhline(0, color="black", lw=0.8)
    if target is not None:
        ax.axhline(100 * target, color="goldenrod", ls=":", lw=1.2, label=f"target ({100 * target:.1f}%)")
    ax.set_xscale("log")
    ax.set_xlabel("test queries seen (log scale)")
    ax.set_ylabel("gap recovered (%)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3, which="both")
    ax.set_title(title or "online replays", fontsize=10)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def _pyplot(path: str | Path) -> tuple[Any, Path]:
    """Return pyplot on the file-only Agg backend, and `path` with its folder made.

    Raises:
        ModuleNotFoundError: matplotlib is not installed.
    """
    try:
        import matplotlib
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ModuleNotFoundError("plotting needs matplotlib (pip install matplotlib)") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return plt, out
