"""Network architectures of published weight files, in plain torch, so those files load
here with `load_state_dict(strict=True)` and nothing is downloaded or installed.

* `d2v.nets.esrgan`: BasicSR's RRDBNet and Real-ESRGAN's SRVGGNetCompact (the
  Real-ESRGAN `.pth` files); `load_esrgan(state_dict) -> (module, scale)`.
* `d2v.nets.rife`: Practical-RIFE's IFNet, v4.x (`flownet.pkl`);
  `load_rife(state_dict) -> RIFEInterpolator`.

Each module names the source it matches and its licence. `program_kind` and
`read_state_dict` tell a saved program from a weights file and read the latter safely
(tensors only: `torch.load(weights_only=True)`, or safetensors when it is installed).
"""

from __future__ import annotations

import zipfile
from pathlib import Path


def is_torchscript(path: str | Path) -> bool:
    """A TorchScript archive (torch.jit.save): a zip with constants.pkl. torch.save's
    zips have data.pkl but no constants.pkl."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n == "constants.pkl" or n.endswith("/constants.pkl") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def program_kind(path: str | Path) -> str | None:
    """'torch.export' for a `.pt2`, 'TorchScript' for a torch.jit.save archive, None for
    anything else (a weights file): the one place the two loaders tell them apart."""
    if Path(path).suffix == ".pt2":
        return "torch.export"
    return "TorchScript" if is_torchscript(path) else None


def read_state_dict(path: str | Path, device="cpu") -> dict:
    """The tensors a weights file holds: `.safetensors` with the safetensors package,
    anything else with `torch.load(weights_only=True)` (no code in the file can run)."""
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ImportError(f"{path.name} is a .safetensors file: pip install safetensors") from None
        return {k: v.to(device) for k, v in load_file(str(path)).items()}
    return torch.load(str(path), map_location=device, weights_only=True)
