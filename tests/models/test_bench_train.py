"""benchmarks/bench_train.py: the end-to-end measurement (a real `vlv-ray train` on prepared
shards with cached latents, on a local Ray cluster) writes well-formed "train" rows from the
run's own log lines. Tiny preset, CPU, a few steps."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_train  # noqa: E402

LINE = ("(RayTrainWorker pid=1) 01:02:{s:02d} step {k}/9 | loss 0.5000 | lr 1.00e-03 | gnorm 1.000 | "
        "8.0 samples/s | step 0.50s | data 0.05s | rejected 0 | $0.0000 | wall {w:.2f}s")


def test_throughput_separates_checkpoint_cost_from_the_step():
    """Steps of 0.5 s; the step after each checkpoint (every 2) takes 2.5 s: the checkpoint costs 2 s."""
    walls, w = [], 0.0
    for k in range(1, 10):
        w += 2.5 if k > 1 and (k - 1) % 2 == 0 else 0.5
        walls.append(w)
    steps = bench_train.parse_log("\n".join(LINE.format(s=k, k=k, w=walls[k - 1]) for k in range(1, 10)))
    assert [s["step"] for s in steps] == list(range(1, 10)) and steps[0]["mem_gb"] is None
    f = bench_train.throughput(steps, skip=2, samples_per_step=4, ckpt_every_run=2, ckpt_every_job=1000)
    assert f["step_wall_s"] == pytest.approx(0.5) and f["checkpoint_s"] == pytest.approx(2.0)
    assert f["samples_per_s_per_gpu"] == pytest.approx(4 / (0.5 + 2.0 / 1000), rel=1e-3)
    assert f["measured_samples_per_s_per_gpu"] < f["samples_per_s_per_gpu"]  # the window paid 3 checkpoints
    assert f["step_only_samples_per_s_per_gpu"] == pytest.approx(8.0)
    with pytest.raises(ValueError, match="run more --steps"):
        bench_train.throughput(steps[:4], skip=2, samples_per_step=4, ckpt_every_run=2, ckpt_every_job=1000)


@pytest.mark.integration  # real Ray, DeepSpeed, Ray Data: data prepare, latents, stage 1 (stage 2 is the same
def test_bench_train_tiny_writes_a_train_row_from_a_real_run(tmp_path):  # path on its export: minutes more)
    results = tmp_path / "results.json"
    cmd = [sys.executable, "benchmarks/bench_train.py", "--preset", "tiny", "--steps", "6", "--checkpoint-every",
           "2", "--skip", "1", "--stages", "1", "--workdir", str(tmp_path / "work"), "--results", str(results)]
    out = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    rows = json.loads(results.read_text())["results"]
    assert [(r["bench"], r["stage"], r["preset"], r["config"]) for r in rows] == [("train", 1, "tiny", "ours")]
    for r in rows:
        for key in ("config", "device", "batch_size", "resolution", "samples_per_s_per_gpu", "mfu", "peak_mem_gb",
                    "date", "command"):
            assert key in r, key
        assert r["samples_per_s_per_gpu"] > 0 and r["measured_samples_per_s_per_gpu"] > 0
        assert r["batch_size"] == 4 and r["resolution"] == 32 and r["flops_per_sample"] > 0
        assert r["checkpoints_in_window"] >= 2 and r["checkpoint_s"] is not None
        assert r["command"].startswith(f"vlv-ray train jobs/stage{r['stage']}-paper.yaml")
        # The figures come from the run's own log, kept beside it.
        log = (tmp_path / "work" / f"train-stage{r['stage']}.log").read_text()
        assert len(bench_train.parse_log(log)) == 6
    assert rows[0]["cached_latents"]  # stage 1 read the latent cache: no VAE encode


def test_gap_pairs_the_newest_train_row_with_the_bare_step_at_its_batch():
    import gpu_gap

    def row(bench, stage, sps, batch=64, **kw):
        return {"bench": bench, "stage": stage, "preset": "paper", "config": "ours", "batch_size": batch,
                "samples_per_s_per_gpu": sps, **kw}
    rows = [row("step", 1, 100.0), row("step", 1, 70.0, batch=32), row("train", 1, 50.0, date="a"),
            row("train", 1, 80.0, date="b"), row("step", 2, 30.0, batch=8), row("train", 2, 20.0, config="old-keys")]
    (g,) = gpu_gap.gap(rows)  # stage 2 has no "ours" train row
    assert (g["stage"], g["train_samples_per_s_per_gpu"], g["step_samples_per_s_per_gpu"]) == (1, 80.0, 100.0)
    assert g["train_over_step"] == 0.8


def test_stand_in_tokenizers_load_as_the_jobs_load_them(tmp_path):
    """The GPU run's model directories: a caption of N words is N tokens through the LLM
    directory's own AutoTokenizer (Qwen2's class), and SD's empty prompt is start, end, pad."""
    from transformers import AutoModelForCausalLM, CLIPTokenizer, Qwen2Config

    import paper_models
    from vlv_ray.models.captioner import TINY_WORDS, Captioner

    llm = tmp_path / "llm"
    AutoModelForCausalLM.from_config(Qwen2Config(vocab_size=512, hidden_size=16, intermediate_size=32,
                                                 num_hidden_layers=1, num_attention_heads=2,
                                                 num_key_value_heads=1)).save_pretrained(llm)
    paper_models.qwen_tokenizer(TINY_WORDS).save_pretrained(llm)
    cap = Captioner.from_llm(str(llm), prefix_dim=8, max_caption_tokens=300)
    words = " ".join(TINY_WORDS[i % len(TINY_WORDS)] for i in range(299))
    tokens, mask = cap.targets([words])
    assert tokens.shape == (1, 300) and int(mask.sum()) == 300 and tokens[0, -1] == cap.eos_id
    paper_models.clip_tokenizer().save_pretrained(tmp_path / "sd" / "tokenizer")
    clip = CLIPTokenizer.from_pretrained(tmp_path / "sd", subfolder="tokenizer")
    ids = clip([""], padding="max_length", max_length=77).input_ids[0]
    assert ids[:3] == [clip.bos_token_id, clip.eos_token_id, clip.pad_token_id] and len(ids) == 77
