"""crunch: make large language models smaller and faster, and measure the damage.

The functions here run crunch's commands (the same code as the ``crunch`` command line, with
the same option names: ``group_size=128`` is ``--group-size 128``) and return what
``--json`` prints, or a result object. Tensors come and go as NumPy arrays.

    import crunch
    r = crunch.evaluate("model.gguf", "wiki.test.raw", ctx=2048, max_tokens=65536)
    print(r.ppl, r.nll)
    crunch.quantize("model/", "q4/", method="gptq", bits=4, calib="self:128x512")

Long calls release the GIL, show progress on a terminal only, and stop cleanly on Ctrl-C
(``KeyboardInterrupt``; an unfinished output is removed). Errors raise ``CrunchError``
subclasses with crunch's messages.
"""

from __future__ import annotations

import json as _json
import os as _os
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

from . import _crunch
from ._crunch import (
    CrunchError,
    FormatError,
    InputError,
    OutputError,
    RecipeError,
    __version__,
)

if TYPE_CHECKING:
    import numpy as np

Path = Union[str, "_os.PathLike[str]"]
"""A file or directory: ``str`` or ``os.PathLike`` (``pathlib.Path``)."""

__all__ = [
    "CrunchError",
    "FormatError",
    "RecipeError",
    "InputError",
    "OutputError",
    "EvalResult",
    "Generation",
    "Model",
    "info",
    "evaluate",
    "quantize",
    "prune",
    "lowrank",
    "compress",
    "pack",
    "unpack",
    "load",
    "tensors",
    "weight",
    "quantized_layer",
    "gptq",
    "hessians",
    "cli_help",
    "__version__",
]


def _arg(value: Any) -> str:
    if isinstance(value, _os.PathLike):
        return _os.fspath(value)
    return str(value)


# Options whose CLI flag has a `--no-` form (on by default): False turns them off.
_NEGATABLE = ("act_order", "mse")


def _flags(options: dict) -> list[str]:
    """Keyword arguments as the CLI's flags: ``group_size=128`` -> ``--group-size=128``;
    ``True`` -> the bare flag; ``None``/``False`` -> left out (``False`` -> ``--no-act-order``
    for the options on by default); a list -> the flag repeated."""
    out = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is False and key in _NEGATABLE:
            out.append("--no-" + flag[2:])
            continue
        if value is None or value is False:
            continue
        if value is True:
            out.append(flag)
        elif isinstance(value, (list, tuple)):
            out += [f"{flag}={_arg(v)}" for v in value]
        else:
            out.append(f"{flag}={_arg(value)}")
    return out


def _command(name: str, positional: list, options: dict) -> Any:
    """Runs ``crunch NAME --flags --json -- POSITIONAL...`` and returns its JSON record
    (``--name=value`` and ``--`` so that values and paths may start with ``-``)."""
    args = [name] + _flags(options) + ["--json", "--"] + [_arg(p) for p in positional]
    records = _json.loads(_crunch._run(args))
    return records[-1] if records else None


def cli_help(command: Optional[str] = None) -> str:
    """The ``--help`` text of a command (``"quantize"``), which documents every option."""
    return _crunch._help([] if command is None else [command])


def info(model: Path) -> dict:
    """Architecture, parameter count, dtypes and bytes on disk (``crunch info --json``)."""
    return _command("info", [model], {})


class EvalResult:
    """What ``evaluate`` measured: ``nll`` (mean negative log-likelihood, nats/token), ``ppl``,
    ``kl`` (mean KL(base||model), with ``base``), ``top1`` (top-1 agreement with ``base``),
    ``top1_accuracy`` (next-token accuracy), ``tokens`` (scored), ``seconds``; ``record`` holds
    every field ``crunch eval --json`` prints."""

    __slots__ = ("nll", "ppl", "kl", "top1", "top1_accuracy", "tokens", "seconds", "record")

    def __init__(self, record: dict):
        self.record = record
        self.nll = record["nll"]
        self.ppl = record["ppl"]
        self.kl = record.get("kl")
        self.top1 = record.get("top1_agreement")
        self.top1_accuracy = record.get("top1_accuracy")
        self.tokens = record.get("tokens_scored")
        self.seconds = record.get("seconds")

    def __repr__(self) -> str:
        s = f"EvalResult(nll={self.nll!r}, ppl={self.ppl!r}"
        if self.kl is not None:
            s += f", kl={self.kl!r}, top1={self.top1!r}"
        return s + f", tokens={self.tokens!r}, seconds={self.seconds:.3f})"


def evaluate(
    model: Path,
    data: Path,
    ctx: int = 2048,
    max_tokens: Optional[int] = None,
    base: Optional[Path] = None,
    device: str = "cpu",
) -> EvalResult:
    """Perplexity of ``model`` on the text file ``data`` (``crunch eval``); with ``base``, also
    KL(base||model) and top-1 agreement. Returns an ``EvalResult``."""
    record = _command(
        "eval",
        [model],
        dict(data=data, ctx=ctx, max_tokens=max_tokens, base=base, device=device),
    )
    return EvalResult(record)


def quantize(
    model: Path,
    out: Path,
    method: Optional[str] = None,
    bits: Optional[int] = None,
    group_size: Union[int, str, None] = None,
    calib: Optional[Path] = None,
    **options: Any,
) -> dict:
    """Quantizes ``model`` into ``out`` (``crunch quantize``): ``method`` "rtn" or "gptq"
    (default), ``bits`` 2-8, ``group_size`` (or "channel"), ``calib`` a text file or
    "self:NxL"; every other option of ``crunch quantize`` by its name (``sym=True``,
    ``act_order=True``, ``format="gptq"``, ``force=True``, ``calib_samples=32``...).
    Returns the ``--json`` summary."""
    opts = dict(method=method, bits=bits, group_size=group_size, calib=calib)
    return _command("quantize", [model], dict(out=out, **opts, **options))


def prune(
    model: Path,
    out: Path,
    method: Optional[str] = None,
    sparsity: Optional[float] = None,
    pattern: Optional[str] = None,
    calib: Optional[Path] = None,
    **options: Any,
) -> dict:
    """Prunes ``model`` into ``out`` (``crunch prune``): ``method`` "magnitude", "wanda" or
    "sparsegpt" (default), ``sparsity`` (e.g. 0.5) or ``pattern`` ("2:4"); other options by
    their CLI names (``bits=4`` quantizes the kept weights with SparseGPT)."""
    opts = dict(method=method, sparsity=sparsity, pattern=pattern, calib=calib)
    return _command("prune", [model], dict(out=out, **opts, **options))


def lowrank(
    model: Path,
    out: Path,
    keep: float,
    method: Optional[str] = None,
    eora_rank: Optional[int] = None,
    calib: Optional[Path] = None,
    **options: Any,
) -> dict:
    """Factors the linear layers of ``model`` into ``out`` (``crunch lowrank``) keeping the
    fraction ``keep`` of their parameters: ``method`` "svd" or "whitened-svd" (default),
    ``eora_rank`` an EoRA correction's rank."""
    opts = dict(keep=keep, method=method, eora_rank=eora_rank, calib=calib)
    return _command("lowrank", [model], dict(out=out, **opts, **options))


def compress(
    model: Path,
    out: Path,
    recipe: Union[Path, dict, None] = None,
    target_size: Union[str, int, None] = None,
    target_bpw: Optional[float] = None,
    target_kl: Optional[float] = None,
    **options: Any,
) -> dict:
    """Runs a recipe (``crunch compress --recipe``): ``recipe`` a path to a TOML file or a
    dict of the same tables (``{"stage": [{"method": "gptq", "bits": 4}]}``). Or searches each
    layer's level for ``target_size`` ("60MB"), ``target_bpw`` or ``target_kl`` (EvoPress;
    needs ``calib``). Other options by their CLI names."""
    if isinstance(recipe, dict):
        import tempfile

        text = _crunch._recipe_toml(_json.dumps(recipe))
        with tempfile.TemporaryDirectory(prefix="crunch-recipe-") as d:
            path = _os.path.join(d, "recipe.toml")
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            return compress(model, out, path, target_size, target_bpw, target_kl, **options)
    opts = dict(
        recipe=recipe, target_size=target_size, target_bpw=target_bpw, target_kl=target_kl
    )
    return _command("compress", [model], dict(out=out, **opts, **options))


def pack(path: Path, out: Path, **options: Any) -> dict:
    """Packs a checkpoint file or directory losslessly (``crunch pack``)."""
    return _command("pack", [path], dict(out=out, **options))


def unpack(packed: Path, out: Path, **options: Any) -> dict:
    """Restores a packed checkpoint bit for bit (``crunch unpack``)."""
    return _command("unpack", [packed], dict(out=out, **options))


class Generation(str):
    """The generated text (a ``str``), with ``record``: what ``crunch generate --json`` prints
    (token counts, speeds, finish reason)."""

    record: dict

    def __new__(cls, record: dict):
        g = super().__new__(cls, record["text"])
        g.record = record
        return g

    @property
    def finish_reason(self) -> str:
        return self.record["finish_reason"]


class Model:
    """A model loaded into crunch's CPU runtime (``crunch.load``), weights kept in their
    compressed encoding."""

    def __init__(self, model: Path, ctx: Optional[int] = None):
        self._m = _crunch._load(_os.fspath(model), ctx)

    @property
    def context(self) -> int:
        return self._m.context

    def generate(self, prompt: str, max_tokens: int = 128, **options: Any) -> Generation:
        """One completion, as ``crunch generate`` makes it, with its options and defaults:
        greedy unless ``temperature`` > 0; ``chat=True`` wraps the prompt as a user message
        in the chat template; ``top_k``, ``top_p``, ``min_p``, ``repetition_penalty``,
        ``seed``, ``stop`` (a string or a list), ``ignore_eos``."""
        flags = _flags(dict(max_tokens=max_tokens, **options))
        return Generation(_json.loads(self._m.generate(prompt, flags)))

    def __repr__(self) -> str:
        return f"crunch.Model({_os.fspath(self._m.path)!r}, ctx={self.context})"


def load(model: Path, ctx: Optional[int] = None) -> Model:
    """Loads ``model`` for generation (``crunch generate``'s runtime)."""
    return Model(model, ctx)


def tensors(model: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor the model's forward pass reads: Hugging Face name -> shape (also for GGUF
    files and crunch's format)."""
    return {name: tuple(shape) for name, shape in _crunch._tensors(_os.fspath(model))}


def weight(model: Path, name: str, torch: bool = False) -> Any:
    """One tensor dequantized to float32, as the model runs it: a NumPy array, or a torch
    tensor sharing its memory with ``torch=True``."""
    a = _crunch._weight(_os.fspath(model), name)
    if torch:
        import torch as _torch

        return _torch.from_numpy(a)
    return a


def quantized_layer(model: Path, layer: str) -> dict[str, Any]:
    """The stored parts of a layer crunch quantized (crunch's format): ``codes`` (uint8,
    [rows, cols]), ``scales`` (float32 holding the stored float16), ``zeros`` (uint8,
    [rows, groups]), ``weight`` (dequantized), ``bits``, ``group_size``, ``symmetric``."""
    return _crunch._quantized(_os.fspath(model), layer)


def _f32_matrix(a: Any, what: str) -> np.ndarray:
    import numpy as np

    if hasattr(a, "detach") and hasattr(a, "cpu"):  # a torch tensor
        a = a.detach().cpu().numpy()
    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.ndim != 2:
        raise InputError(f"{what}: expected a 2-D array, got {a.ndim} dimensions")
    return a


def gptq(
    weight: Any,
    hessian: Any,
    bits: int = 4,
    group_size: Union[int, str, None] = 128,
    sym: bool = False,
    act_order: Optional[bool] = None,
    mse: Optional[bool] = None,
    damp: Optional[float] = None,
) -> dict[str, Any]:
    """GPTQ of a weight [rows, cols] with the Hessian of its inputs [cols, cols], exactly as
    ``crunch quantize --method gptq`` quantizes a layer with those settings (same codes, bit
    for bit). ``group_size`` None, 0 or "channel": one grid per row; ``act_order``, ``mse``
    (MSE-searched clipping) and ``damp`` left as None take the CLI's defaults. Returns the
    dict of ``quantized_layer``."""
    if group_size in (None, "channel", -1):
        group_size = 0
    w = _f32_matrix(weight, "weight")
    h = _f32_matrix(hessian, "hessian")
    return _crunch._gptq(w, h, bits, int(group_size), sym, act_order, mse, damp)


def hessians(model: Path, calib: Path, calib_samples: Optional[int] = None,
             calib_len: Optional[int] = None, seed: Optional[int] = None,
             layers: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The calibration Hessians 2·XᵀX/N of the linear layers matching ``layers`` (patterns as
    in recipes; empty: all), from windows drawn as ``crunch quantize`` draws them. Inputs are
    the uncompressed model's: for the first block, exactly what GPTQ sees (later blocks see
    already-quantized blocks in a real run). Layers reading one input (q/k/v, gate/up) have
    equal Hessians."""
    return _crunch._hessians(
        _os.fspath(model), _os.fspath(calib), calib_samples, calib_len, seed, list(layers)
    )
