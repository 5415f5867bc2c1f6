"""Run in Quantus' environment: the PyTorch model equals the Keras one (logits printed for the lead to
compare). Usage: /work/quantus-venv/bin/python tests/quantus_reference/check_models.py"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).parent))
import numpy as np, torch
from models import inputs, torch_model
x, y = inputs()
print(np.array2string(torch_model()(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).detach().numpy(), precision=6))
