"""Run configurations: one frozen dataclass per command, loaded from YAML and overridden by CLI flags.

Precedence: a flag given on the command line > the YAML file (``--config``) > the method's defaults >
the dataclass defaults. Unknown YAML keys are refused (a typo must not silently fall back to a default),
and so are ``OUTPUT_FIELDS``: where a command writes comes from the command line only, never from a config
file (which may be shared: with ``--force``, an ``out`` of its choosing would replace that directory).
"""

from __future__ import annotations

import dataclasses
import operator
import re
from pathlib import Path

import yaml

from unlearn_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class UnlearnConfig:
    """Everything `unlearn-jax unlearn` needs. ``None`` fields take the method's default."""

    model: str
    forget: str
    method: str
    out: str
    retain: str | None = None
    field_map: str | None = None
    steps: int | None = None
    lr: float | None = None
    optimizer: str = "adamw"
    warmup_steps: int = 0
    batch_size: int = 32
    max_grad_norm: float = 1.0
    beta: float | None = None
    alpha: float | None = None
    gamma: float = 1.0
    margin: float = 0.0
    retain_loss: str = "nll"
    rmu_layer: int | None = None
    rmu_coeff: float | None = None
    trainable: str | None = None
    select: str | None = None
    drop: float = 0.0
    curriculum: str = "none"
    stages: int = 1
    rescore: bool = False
    mesh: str | None = None
    seed: int = 0
    shuffle: bool = True
    stop_when: str | None = None
    eval_every: int = 0
    checkpoint_every: int = 0
    log_every: int = 10


def load_yaml(path: str) -> dict:
    """A YAML mapping of config keys (dashes or underscores)."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"--config {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: must be a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


OUTPUT_FIELDS = ("out",)  # config fields naming where a command writes: command line only


def build_config(cls, cli: dict, yaml_path: str | None = None):
    """``cls`` from YAML values overridden by the CLI's non-None values; unknown YAML keys and
    ``OUTPUT_FIELDS`` in the YAML refused."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    values = load_yaml(yaml_path) if yaml_path else {}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise UserError(f"--config {yaml_path}: unknown key(s) {', '.join(unknown)}")
    for name in OUTPUT_FIELDS:
        if name in values:
            flag = "--" + name.replace("_", "-")
            raise UserError(f"--config {yaml_path}: key {name!r} is not allowed: a config file cannot choose where "
                            f"to write; give {flag} on the command line")
    for name, value in values.items():
        _check_type(name, value, names[name].type, where=f"--config {yaml_path}: ")
    values.update({k: v for k, v in cli.items() if k in names and v is not None})
    missing = [n for n, f in names.items() if f.default is dataclasses.MISSING and n not in values]
    if missing:
        raise UserError(f"missing required option(s): {', '.join('--' + m.replace('_', '-') for m in missing)}")
    for name, value in values.items():
        _check_type(name, value, names[name].type)
    return cls(**values)


def _check_type(name: str, value, annotation: str, where: str = "") -> None:
    flag = name if where else "--" + name.replace("_", "-")
    base = annotation.replace(" | None", "")
    ok = {"str": isinstance(value, str), "int": isinstance(value, int) and not isinstance(value, bool),
          "float": isinstance(value, (int, float)) and not isinstance(value, bool),
          "bool": isinstance(value, bool)}.get(base, True)
    if not ok:
        raise UserError(f"{where}{flag}: expected {base}, got {value!r}")


_COMPARISONS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
STOP_METRICS = ("forget_acc", "forget_nll", "retain_acc", "retain_nll")


def parse_stop_when(text: str | None):
    """``forget_acc<=0.1`` -> (metric, test) or None."""
    if not text:
        return None
    match = re.fullmatch(r"\s*(\w+)\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*", text)
    if not match or match.group(1) not in STOP_METRICS:
        raise UserError(f"--stop-when {text!r}: expected METRIC<=VALUE with METRIC one of {', '.join(STOP_METRICS)}")
    metric, op, value = match.group(1), _COMPARISONS[match.group(2)], float(match.group(3))
    return metric, lambda metrics: metric in metrics and op(metrics[metric], value)
