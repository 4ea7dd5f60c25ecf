"""A real-job sweep's rows → `sweep.csv`, `sweep.md` (a markdown table) and `sweep.png`
(reconstruction FID against images, dollars on a second axis). One row per point, failed
ones included. Measured figures (wall time, hours, the runs' ledgers' dollars) sit beside
the cost model's estimates made before the sweep started."""
from __future__ import annotations

import csv
import math
from pathlib import Path

COLUMNS = ["images", "steps", "status", "recon_fid", "clip_image_image", "caption_clip", "caption_t2i_fid",
           "stage1_loss", "stage2_loss", "wall_s", "worker_hours", "gpu_hours", "usd", "est_gpu_hours", "est_usd",
           "run", "error"]


def error_line(error) -> str:
    """The last line of an error (an exception, or the path of a file holding one): the root cause."""
    text = str(error or "")
    p = Path(text) if text and "\n" not in text and len(text) < 4096 else None
    if p is not None and p.is_file():
        text = p.read_text(errors="replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "unknown error"


def _num(v, fmt: str) -> str:
    return "" if v is None or v == "" or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows({c: ("" if r.get(c) is None else r[c]) for c in COLUMNS} for r in rows)


def markdown(rows: list[dict]) -> str:
    stage2 = any(r.get("caption_clip") is not None or r.get("caption_t2i_fid") is not None for r in rows)
    head = ["images", "steps", "recon FID", "CLIP img–img", *(["caption CLIP", "caption→image FID"] * stage2),
            "wall s", "GPU-h", "$", "est. GPU-h", "est. $"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r["status"] != "ok":
            cells = [f"{r['images']:,}", f"failed: {r.get('error', '')}".replace("|", "/"), *[""] * (len(head) - 2)]
        else:
            cells = [f"{r['images']:,}", _num(r.get("steps"), ","), f"**{_num(r.get('recon_fid'), '.4f')}**",
                     _num(r.get("clip_image_image"), ".2f"),
                     *([_num(r.get("caption_clip"), ".2f"), _num(r.get("caption_t2i_fid"), ".4f")] * stage2),
                     _num(r.get("wall_s"), ".0f"), _num(r.get("gpu_hours"), ".4f"), _num(r.get("usd"), ".4f"),
                     _num(r.get("est_gpu_hours"), ".4f"), _num(r.get("est_usd"), ".4f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, title: str) -> None:
    """FID against images (left axis) and dollars, measured and estimated, on a second axis."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a cluster node or in CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    usd_ax = ax.twinx()
    ok = sorted((r for r in rows if r["status"] == "ok" and r.get("recon_fid") is not None), key=lambda r: r["images"])
    ax.plot([r["images"] for r in ok], [r["recon_fid"] for r in ok], "o-", color="tab:blue",
            label="reconstruction FID")
    for key, style, label in (("usd", "s--", "$ measured"), ("est_usd", "^:", "$ estimated (cost model)")):
        pts = [(r["images"], r[key]) for r in ok if r.get(key) is not None]
        if pts:
            usd_ax.plot(*zip(*pts), style, color="tab:green", label=label, alpha=0.8)
    ax.set_xlabel("stage-1 images")
    ax.set_ylabel("reconstruction FID (lower is better)", color="tab:blue")
    usd_ax.set_ylabel("dollars", color="tab:green")
    if ok and max(r["images"] for r in ok) >= 10 * min(r["images"] for r in ok):
        ax.set_xscale("log")  # data-volume sweeps step by multiples
    ax.grid(alpha=0.3)
    handles = [h for a in (ax, usd_ax) for h in a.get_legend_handles_labels()[0]]
    if handles:
        ax.legend(handles=handles, loc="upper center", fontsize="small")
    save_figure(fig, path, title, failed=len(rows) - len(ok))


def save_figure(fig, path: Path, title: str, *, failed: int) -> None:
    """The plot's title (saying how many failed points it leaves out), the PNG, the figure closed."""
    import matplotlib.pyplot as plt

    fig.suptitle(title + (f" ({failed} failed point{'s' * (failed > 1)} not shown)" if failed else ""),
                 fontsize="medium")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_files(rows: list[dict], workdir: Path, title: str, *, write_csv, markdown, plot) -> dict[str, Path]:
    """sweep.csv, sweep.md and sweep.png in `workdir`, by a report's own three writers."""
    paths = {"csv": workdir / "sweep.csv", "md": workdir / "sweep.md", "png": workdir / "sweep.png"}
    write_csv(rows, paths["csv"])
    paths["md"].write_text(markdown(rows))
    plot(rows, paths["png"], title)
    return paths


def write(rows: list[dict], workdir: Path, title: str) -> dict[str, Path]:
    return write_files(rows, workdir, title, write_csv=write_csv, markdown=markdown, plot=plot)
