"""What a job cost: resource-seconds per stage, priced by a table (`prices.yaml`).

    a stage's GPU-seconds = its GPU fraction x its seconds      (0.5 GPU for 4 s: 2 GPU-s)
    a stage's CPU-seconds = its CPU cores x its seconds         (num_cpus in the Serve config)
    total = GPU-s / 3600 x gpu_hour[type] + CPU-s / 3600 x cpu_core_hour   (the table's currency)

The farm charges each stage with the resources its replica holds (Ray's assigned
resources: what the operator pays for, busy or not); `d2v render` and batch charge the
process as one stage, `process`, with the cores it actually used (its CPU time / its wall
time). The table ships with d2v (d2v/prices.yaml); D2V_PRICES names another file.
"""

from __future__ import annotations

import os
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from d2v.errors import InvalidRequestError

PRICES_FILE = "prices.yaml"


class StageUsage(BaseModel):
    seconds: float
    cpus: float = 0.0  # cores held (farm) or used on average (in-process)
    gpus: float = 0.0  # the GPU fraction held
    device: str | None = None  # the GPU's name, where the stage ran on one (its type prices it)


class Cost(BaseModel):
    """`cost` in the manifest."""

    currency: str
    total: float = Field(description="in `currency`, by the price table")
    cpu_seconds: float = Field(description="core-seconds: each stage's cores x its seconds")
    gpu_seconds: float = Field(description="GPU-seconds: each stage's GPU fraction x its seconds")
    gpu_type: str | None = None
    stages: dict[str, StageUsage] = Field(default_factory=dict)


class PriceTable(BaseModel):
    currency: str = "USD"
    cpu_core_hour: float = Field(ge=0)
    gpu_hour: dict[str, float] = Field(default_factory=dict)
    default_gpu: str | None = None

    @model_validator(mode="after")
    def _default_is_priced(self) -> "PriceTable":
        if self.default_gpu is not None and self.default_gpu not in self.gpu_hour:
            raise ValueError(f"default_gpu {self.default_gpu!r} has no gpu_hour price")
        return self

    def gpu_type(self, device_name: str | None = None) -> str | None:
        """D2V_GPU_TYPE, else the table's type named in the device's name (longest first:
        'H100' before 'H10'), else the table's default."""
        if chosen := os.environ.get("D2V_GPU_TYPE"):
            return chosen
        for name in sorted(self.gpu_hour, key=len, reverse=True):
            if device_name and name.lower() in device_name.lower():
                return name
        return self.default_gpu

    def price(self, stages: dict[str, StageUsage], device_name: str | None = None) -> Cost:
        """`device_name`: the GPU the stages ran on, when they do not say (in-process)."""
        cpu_s = sum(u.cpus * u.seconds for u in stages.values())
        gpu_s = sum(u.gpus * u.seconds for u in stages.values())
        device_name = next((u.device for u in stages.values() if u.gpus and u.device), device_name)
        gpu_type = self.gpu_type(device_name) if gpu_s > 0 else None
        if gpu_type is not None and gpu_type not in self.gpu_hour:
            raise InvalidRequestError(f"the price table has no gpu_hour for {gpu_type!r} (D2V_GPU_TYPE or "
                                      f"default_gpu); it has {sorted(self.gpu_hour)}")
        total = cpu_s / 3600 * self.cpu_core_hour + (gpu_s / 3600 * self.gpu_hour[gpu_type] if gpu_type else 0.0)
        return Cost(currency=self.currency, total=round(total, 9), cpu_seconds=round(cpu_s, 4),
                    gpu_seconds=round(gpu_s, 4), gpu_type=gpu_type,
                    stages={k: u.model_copy(update={"seconds": round(u.seconds, 4)}) for k, u in stages.items()})


@lru_cache(maxsize=4)
def _load(path: str | None) -> PriceTable:
    where = path or f"d2v/{PRICES_FILE}"
    try:
        text = Path(path).read_text() if path else resources.files("d2v").joinpath(PRICES_FILE).read_text()
        return PriceTable.model_validate(yaml.safe_load(text))
    except OSError as e:
        raise InvalidRequestError(f"price table {where} (D2V_PRICES) cannot be read: {e.strerror}") from None
    except ValidationError as e:
        first = e.errors()[0]
        where_in = ".".join(str(p) for p in first["loc"]) or "the file"
        raise InvalidRequestError(f"price table {where} (D2V_PRICES) is not valid: {where_in}: "
                                  f"{'is required' if first['type'] == 'missing' else first['msg']}") from None
    except (yaml.YAMLError, ValueError) as e:
        first = str(e).splitlines()[0]
        raise InvalidRequestError(f"price table {where} (D2V_PRICES) is not valid: {first}") from None


def price_table() -> PriceTable:
    table = _load(os.environ.get("D2V_PRICES") or None)
    if (chosen := os.environ.get("D2V_GPU_TYPE")) and chosen not in table.gpu_hour:
        raise InvalidRequestError(f"D2V_GPU_TYPE={chosen} has no gpu_hour in the price table; it has "
                                  f"{sorted(table.gpu_hour)}")
    return table


def cuda_device_name() -> str | None:
    """The GPU this process renders on, when torch is loaded and has one (never imports torch)."""
    import sys

    torch = sys.modules.get("torch")
    try:
        return torch.cuda.get_device_name() if torch is not None and torch.cuda.is_available() else None
    except Exception:
        return None
