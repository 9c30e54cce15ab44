import os
import sys

# Tests import shared helpers (tolerances) as top-level modules.
sys.path.insert(0, os.path.dirname(__file__))
# Tests never touch a network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
