"""Plots of a run's metrics: reward and accuracy curves over training steps.

python -m posttrain.plotting runs/demo/metrics.jsonl runs/demo/training_curves.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _smooth(values: list[float], window: int = 5) -> list[float]:
    out = []
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1) : i + 1]
        out.append(sum(chunk) / len(chunk))
    return out


def plot_curves(
    metrics_path: str | Path, out_path: str | Path, evals: dict[str, dict] | None = None
) -> Path | None:
    """Total reward and each ``rewards/<name>/mean`` per step; held-out accuracy before/after if given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_metrics(metrics_path) if "reward" in r]
    if not rows:
        return None
    steps = [r["step"] for r in rows]
    keys = sorted({k for r in rows for k in r if k.startswith("rewards/") and k.endswith("/mean")})
    ncols = 2 if evals else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4), squeeze=False)
    ax = axes[0][0]
    reward = [r["reward"] for r in rows]
    ax.plot(steps, reward, alpha=0.3, color="C0")
    ax.plot(steps, _smooth(reward), color="C0", label="total reward (smoothed)")
    for i, key in enumerate(keys, 1):
        vals = [r.get(key) for r in rows]
        pts = [(s, v) for s, v in zip(steps, vals) if v is not None]
        if pts:
            ax.plot([p[0] for p in pts], _smooth([p[1] for p in pts]), color=f"C{i}", label=key.split("/")[1])
    ax.set_xlabel("step")
    ax.set_ylabel("reward")
    ax.set_title("training reward")
    ax.legend(fontsize=8)
    if evals:
        ax2 = axes[0][1]
        labels = list(evals)
        names = sorted({k for m in evals.values() for k in m if k.startswith(("accuracy", "mean@", "maj@"))})
        width = 0.8 / max(len(labels), 1)
        for i, label in enumerate(labels):
            ax2.bar(
                [j + i * width for j in range(len(names))],
                [evals[label].get(n, 0) for n in names],
                width,
                label=label,
            )
        ax2.set_xticks([j + width * (len(labels) - 1) / 2 for j in range(len(names))], names)
        ax2.set_ylim(0, 1)
        ax2.set_title("held-out accuracy")
        ax2.legend()
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


if __name__ == "__main__":
    plot_curves(sys.argv[1], sys.argv[2])
