"""A sweep's rows → `sweep.csv`, `sweep.md` (a markdown table) and `sweep.png` (accuracy vs
images and vs dollars, one line per query count). One row per point, failed ones included.

Each point also has its reconstruction FID in miniature; the table ends with the Spearman
rank correlation across points of that FID with caption and reconstruction accuracy
(torchmetrics' `spearman_corrcoef`): negative when FID falls where accuracy rises, the
evidence that the full-scale metric reads learning."""
from __future__ import annotations

import csv
import math
from pathlib import Path

from vlv_ray.sweep.report import save_figure, write_files
from vlv_ray.toyworld.world import ATTRIBUTES

# The columns of the CSV, in order; the table shows the same with friendlier headers.
COLUMNS = ["images", "queries", "paired_images", "status", "accuracy", *(f"accuracy_{a}" for a in ATTRIBUTES),
           "recon_accuracy", "recon_fid", "stage1_loss", "stage2_loss", "wall_s", "worker_hours", "usd", "error"]


def row(config: dict, metrics: dict | None, error: str | None) -> dict:
    """One point's row from its trial's config and reported metrics (None when it failed)."""
    out = {c: None for c in COLUMNS}
    out.update(images=config["images"], queries=config["queries"], paired_images=config["paired_images"])
    if error is not None or not metrics:
        out.update(status="failed", error=error or "no metrics reported")
        return out
    acc = metrics["caption_accuracy"]
    out.update(status="ok", accuracy=acc["overall"], **{f"accuracy_{a}": acc[a] for a in ATTRIBUTES},
               recon_accuracy=metrics["reconstruction_accuracy"]["overall"],
               recon_fid=metrics["reconstruction_fid"]["value"], stage1_loss=metrics["stage1_final_loss"],
               stage2_loss=metrics["stage2_final_loss"],
               wall_s=metrics["seconds"]["total_s"], worker_hours=metrics["cost"]["worker_hours"],
               usd=metrics["cost"]["usd"])
    return out


def write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)


def _pct(v: float | None) -> str:
    return "" if v is None else f"{v:.1%}"


def _num(v: float | None, fmt: str) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def markdown(rows: list[dict]) -> str:
    head = ["images", "queries", "paired images", "caption accuracy", *ATTRIBUTES, "recon accuracy",
            "recon FID", "stage-1 loss", "wall s", "worker-hours", "$"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r["status"] != "ok":
            cells = [str(r["images"]), str(r["queries"]), str(r["paired_images"]),
                     f"failed: {r['error']}".replace("|", "/"), *[""] * (len(head) - 4)]
        else:
            cells = [str(r["images"]), str(r["queries"]), str(r["paired_images"]), f"**{_pct(r['accuracy'])}**",
                     *(_pct(r[f"accuracy_{a}"]) for a in ATTRIBUTES), _pct(r["recon_accuracy"]),
                     _num(r["recon_fid"], ".3f"), _num(r["stage1_loss"], ".4f"),
                     _num(r["wall_s"], ".0f"), _num(r["worker_hours"], ".4f"), _num(r["usd"], ".4f")]
        lines.append("| " + " | ".join(cells) + " |")
    rho = rank_correlations(rows)
    if rho:
        lines.append("\nSpearman rank correlation across points of reconstruction FID with caption accuracy "
                     f"{rho['caption']:+.2f}, with reconstruction accuracy {rho['reconstruction']:+.2f} "
                     f"({rho['points']} points; negative: FID falls where accuracy rises)")
    return "\n".join(lines) + "\n"


def rank_correlations(rows: list[dict]) -> dict | None:
    """Spearman's ρ of reconstruction FID with caption and reconstruction accuracy over the
    points that finished (None below 3 points, where a rank correlation says nothing)."""
    import torch
    from torchmetrics.functional import spearman_corrcoef

    ok = [r for r in rows if r["status"] == "ok" and r.get("recon_fid") not in (None, "")]
    if len(ok) < 3:
        return None
    fid = torch.tensor([float(r["recon_fid"]) for r in ok], dtype=torch.float64)

    def rho(key: str) -> float:
        return float(spearman_corrcoef(fid, torch.tensor([float(r[key]) for r in ok], dtype=torch.float64)))

    return {"caption": rho("accuracy"), "reconstruction": rho("recon_accuracy"), "points": len(ok)}


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Two panels, accuracy vs stage-1 images and vs dollars; one line per query count."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a cluster node or in CI
    import matplotlib.pyplot as plt

    fig, (by_images, by_usd) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    ok = [r for r in rows if r["status"] == "ok"]
    for q in sorted({r["queries"] for r in ok}):
        pts = sorted((r for r in ok if r["queries"] == q), key=lambda r: r["images"])
        acc = [100 * r["accuracy"] for r in pts]
        by_images.plot([r["images"] for r in pts], acc, marker="o", label=f"{q} queries")
        by_usd.plot([r["usd"] for r in pts], acc, marker="o", label=f"{q} queries")
    by_images.set_xlabel("stage-1 images")
    by_usd.set_xlabel("dollars (stage 1 + stage 2)")
    if ok and max(r["images"] for r in ok) >= 10 * min(r["images"] for r in ok):
        by_images.set_xscale("log")  # data-volume sweeps step by multiples
    for ax in (by_images, by_usd):
        ax.set_ylim(0, 100)  # one scale for every sweep, so plots compare at a glance
        ax.set_ylabel("held-out caption attribute accuracy (%)")
        ax.grid(alpha=0.3)
        if ok:
            ax.legend()
    save_figure(fig, path, title, failed=len(rows) - len(ok))


def write(rows: list[dict], workdir: Path, title: str) -> dict[str, Path]:
    return write_files(rows, workdir, title, write_csv=write_csv, markdown=markdown, plot=plot)
