"""Where the miniature world's committed weights live (package data). A module of its own,
importing nothing, so that the model presets can name the teacher without importing the
script that trains it."""
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
TEACHER_DIR = ASSETS / "teacher"
TOWER_FILE = ASSETS / "vision_tower.safetensors"  # the pretrained toy vision tower (toyworld/tower.py)
