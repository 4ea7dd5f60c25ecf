"""`vlv-ray eval`: the paper's measurements, computed with the field's libraries.

- `features.py`: the feature extractor, torchmetrics' Inception (torch-fidelity weights, the
  `eval` extra) or any `module:attribute` naming an nn.Module (`--features`);
- `fid.py`: FID from running feature statistics (torchmetrics' FrechetInceptionDistance);
- `clip.py`: CLIP text–image and image–image scores (torchmetrics' CLIPScore);
- `job.py`: the Ray Data evaluation (held-out shards → actors that generate and extract →
  statistics reduced on the driver) behind `vlv-ray eval recon|caption` (vlv_ray/cli/eval.py);
- `during.py`: stage 1's reconstruction FID by images seen, inside the training loop.
"""
