#!/usr/bin/env bash
# Wheels that benchmarks/gpu_run.sh needs on the GPU machine, fetched here (that machine
# reaches no registry). Its image has python3.12 + torch 2.11 and many packages
# (/work/.library/device/KINDS.md) but no ray, deepspeed or diffusers, and an older
# transformers. A call carries at most 64 MiB, so the wheels go in two folders, one per call:
#   .gpu-wheels-1: ray without its Java jar (ray_dist.jar, 32 of its 79 MB: Java workers only)
#   .gpu-wheels-2: everything else
# Usage: bash benchmarks/gpu_wheels.sh     (both folders are in .gitignore: they travel only as `carry`)
set -euo pipefail
cd "$(dirname "$0")/.."
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
      --platform manylinux1_x86_64 --platform any)
rm -rf .gpu-wheels-1 .gpu-wheels-2 /tmp/vlv-gpu-wheels && mkdir -p .gpu-wheels-1 .gpu-wheels-2 /tmp/vlv-gpu-wheels
# The dependency closure, as pip resolves it for python 3.12 on x86-64 Linux.
python3 -m pip download -q "${PLAT[@]}" -d /tmp/vlv-gpu-wheels "ray[default,data,train]==2.60.0" \
  "diffusers==0.42.1" "transformers==5.23.0" hjson "pydantic>=2" einops py-cpuinfo
# deepspeed is published as a source archive only; its wheel is pure Python (ops JIT-built).
python3 -m pip wheel -q --no-deps --no-build-isolation -w /tmp/vlv-gpu-wheels "deepspeed==0.19.8"
# Drop what the image already has (KINDS.md's list), except the versions the project pins.
HAVE=$(sed -n 's/.*Packages: \(.*\)\.$/\1/p' /work/.library/device/KINDS.md 2>/dev/null | tr ',' '\n' | tr -d ' ' \
       | tr 'A-Z_' 'a-z-')
KEEP="ray transformers diffusers deepspeed huggingface-hub tokenizers safetensors"
for w in /tmp/vlv-gpu-wheels/*.whl; do
  name=$(basename "$w" | cut -d- -f1 | tr 'A-Z_' 'a-z-')
  # (here-strings, not `echo | grep -q`: under pipefail grep's early exit fails the pipe)
  if grep -qx "$name" <<< "$HAVE" && [[ " $KEEP " != *" $name "* ]]; then continue; fi
  if [ "$name" = ray ]; then  # repack without the Java jar (and its RECORD line)
    d=$(mktemp -d) && (cd "$d" && python3 -m zipfile -e "$w" . && rm -f ray/jars/ray_dist.jar \
      && sed -i '/ray_dist.jar/d' ray-*.dist-info/RECORD && python3 -m zipfile -c "/tmp/$(basename "$w")" ./*) \
      && mv "/tmp/$(basename "$w")" .gpu-wheels-1/ && rm -rf "$d"
  else
    cp "$w" .gpu-wheels-2/
  fi
done
du -sh .gpu-wheels-1 .gpu-wheels-2
ls .gpu-wheels-2
