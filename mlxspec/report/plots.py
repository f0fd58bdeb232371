"""PNG plots of a bench report (with matplotlib, an optional extra: `pip install 'mlxspec[plots]'`)."""

from __future__ import annotations

from pathlib import Path

PLOT_FILES = ("tokens_per_s.png", "acceptance.png")


def plots(report: dict, out_dir: Path) -> list[Path]:
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    temps = sorted({r["temperature"] for r in report["rows"]})
    fig, axes = plt.subplots(1, len(temps), figsize=(5 * len(temps), 4), squeeze=False)
    for ax, temp in zip(axes[0], temps):
        rows = [r for r in report["rows"] if r["temperature"] == temp]
        for engine in ("mlxspec", "mlx-lm"):
            fixed = sorted((r for r in rows if r["engine"] == engine and isinstance(r["k"], int)), key=lambda r: r["k"])
            if fixed:
                ax.plot([r["k"] for r in fixed], [r["tokens_per_s"] for r in fixed], "o-", label=f"{engine} measured")
        base = next((r["tokens_per_s"] for r in rows if r["engine"] == "mlxspec" and r["k"] == 0), None)
        pred = [(r["k"], r["predicted_speedup"] * base) for r in rows
                if r["engine"] == "mlxspec" and r.get("predicted_speedup") and base]
        if pred:
            ax.plot(*zip(*sorted(pred)), "x--", label="mlxspec predicted")
        ax.set(title=f"T = {temp:g}", xlabel="draft tokens k (0 = plain)", ylabel="tokens/s")
        ax.legend()
    fig.tight_layout()
    paths.append(out_dir / PLOT_FILES[0])
    fig.savefig(paths[-1], dpi=100)
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in report["rows"]:
        if r.get("acceptance_per_position") and isinstance(r["k"], int) and r["k"] == max(
                x["k"] for x in report["rows"] if isinstance(x["k"], int)):
            acc = r["acceptance_per_position"]
            ax.plot(range(1, len(acc) + 1), acc, "o-", label=f"{r['engine']} T={r['temperature']:g}")
    ax.set(xlabel="draft position", ylabel="P(accepted through this position)", ylim=(0, 1))
    ax.legend()
    fig.tight_layout()
    paths.append(out_dir / PLOT_FILES[1])
    fig.savefig(paths[-1], dpi=100)
    plt.close("all")
    return paths
