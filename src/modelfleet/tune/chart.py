"""Latency-throughput curves of a profile, one panel per sequence length, one line per configuration
(matplotlib, imported here only)."""

from __future__ import annotations

from pathlib import Path

from modelfleet.tune.schema import Profile
from modelfleet.tune.search import score

TOP_LINES = 8  # the best configurations by throughput at the SLO; the rest are drawn faint


def draw(profile: Profile, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({m.seq_len for m in profile.measurements})
    fig, axes = plt.subplots(
        1, max(1, len(lengths)), figsize=(6.5 * max(1, len(lengths)), 4.8), squeeze=False
    )
    slo = profile.slo
    for ax, seq_len in zip(axes[0], lengths, strict=False):
        rows = [m for m in profile.measurements if m.seq_len == seq_len and m.steps]
        rows.sort(key=lambda m: score(m, slo), reverse=True)
        for rank, m in enumerate(rows):
            points = [(s.throughput_per_s, s.p90_ms) for s in m.steps if s.p90_ms is not None]
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            strong = rank < TOP_LINES
            ax.plot(
                xs,
                ys,
                marker="o" if strong else None,
                markersize=3,
                linewidth=1.5 if strong else 0.7,
                alpha=1.0 if strong else 0.3,
                label=f"{m.config} ({score(m, slo):.0f}/s)" if strong else None,
            )
        ax.axhline(slo.p90_ms, color="red", linestyle="--", linewidth=1, label=f"SLO P90 {slo.p90_ms:g} ms")
        if slo.margin < 1:
            ax.axhline(
                slo.bound_ms,
                color="red",
                linestyle=":",
                linewidth=1,
                label=f"capacity bound {slo.bound_ms:g} ms",
            )
        ax.set_yscale("log")
        ax.set_xlabel("throughput (inferences/s)")
        ax.set_ylabel("P90 latency (ms)")
        low = next((m.seq_len_min for m in rows if m.seq_len_min is not None), None)
        shown = f"sequences {low}-{seq_len} mixed" if low is not None else f"sequence {seq_len}"
        ax.set_title(f"{profile.model} v{profile.version}, {shown}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{profile.machine.line} · {profile.search} search · {profile.created_at}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
