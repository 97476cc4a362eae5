"""``weightspace merge CONFIG OUT``: a mergekit config merged out of core into a file or a Hugging Face
folder, the resolved config beside it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from ..errors import ConfigError
from ..shards import SINGLE_NAME, ShardWriter
from .config import parse_merge_config
from .execute import DEFAULT_BUDGET, run_plan
from .hf_folder import (
    chat_template_text,
    check_vocabulary,
    copy_tokenizer,
    write_chat_template,
    write_config,
)
from .plan import plan_merge
from .sources import check_key_applies, open_source, read_yaml_mapping

DEFAULT_SHARD_BYTES = 5_000_000_000  # mergekit's default --out-shard-size


@dataclass(frozen=True)
class MergeResult:
    """Where a merge went: the weights (a file, or the folder's shards and index), the resolved config,
    the other files of a Hugging Face folder, and the config's no-effect notes."""

    weights: list[Path]
    config: Path
    extras: list[Path]
    notes: tuple[str, ...]


def merge_from_config(config: str | Path | Mapping, out: str | Path, *, out_shard_size: int = DEFAULT_SHARD_BYTES,
                      threads: int | None = None, memory_budget: int = DEFAULT_BUDGET,
                      progress: bool = True, key: str | None = None) -> MergeResult:
    """``weightspace merge CONFIG OUT``: merge the models a mergekit config names, out of core.

    ``OUT.safetensors``: one file, and ``OUT.yaml`` (the resolved config) beside it. Any other ``OUT`` is
    a Hugging Face folder: shards of at most ``out_shard_size`` bytes (``model.safetensors``, or
    ``model-0000i-of-0000n.safetensors`` and ``model.safetensors.index.json``), the donor's
    ``config.json`` (the base model's, else the first model's), the tokenizer files of
    ``tokenizer_source`` (default: the donor's), the chat template, and ``merge.yaml``.
    ``threads`` (default: torch's thread count) tensors are merged at once, within ``memory_budget``
    bytes of tensors in flight. ``key``: the entry of each training checkpoint file among the models
    that holds the model."""
    raw = config if isinstance(config, Mapping) else read_yaml_mapping(config)
    cfg = parse_merge_config(raw).resolved()
    check_key_applies(key, cfg.referenced_models())
    sources = {ref: open_source(ref, key) for ref in cfg.referenced_models()}
    plan = plan_merge(cfg, sources)
    out = Path(out)
    single = out.suffix == ".safetensors"
    donor, tokenizer, template = _folder(plan.donor), None, None
    if not single:  # what the folder gets besides the weights: checked before any work
        source = cfg.tokenizer_source
        if source == "base" and cfg.base_model is None:
            raise ConfigError("merge config: tokenizer_source: base, but there is no base_model")
        tokenizer = _folder(plan.donor if source is None else cfg.base_model if source == "base" else source)
        if source is not None:
            check_vocabulary(tokenizer, donor)
        if cfg.chat_template is not None:
            template = chat_template_text(cfg.chat_template, [f for f in map(_folder, cfg.referenced_models()) if f])
    folder = out.parent if single else out
    folder.mkdir(parents=True, exist_ok=True)
    settings = {**cfg.to_dict(), **({"key": key} if key else {})}
    writer = ShardWriter(folder, [(j.out, j.spec) for j in plan.jobs], max_shard_bytes=0 if single else out_shard_size,
                         metadata={"weightspace": json.dumps(settings)}, single_name=out.name if single else SINGLE_NAME)
    try:
        run_plan(plan, sources, writer.write, seed=cfg.seed, threads=threads or torch.get_num_threads(),
                 memory_budget=memory_budget, progress=progress)
    except BaseException:
        writer.abort()
        raise
    weights = writer.close()
    config_path = out.with_suffix(".yaml") if single else out / "merge.yaml"
    config_path.write_text(yaml.safe_dump(settings, sort_keys=False))
    extras = []
    if not single:
        extras += [p for p in [write_config(out, donor, dict(plan.layers), cfg.out_dtype or cfg.dtype)] if p]
        extras += copy_tokenizer(out, tokenizer)
        if template is not None:
            extras.append(write_chat_template(out, template))
    return MergeResult(weights, config_path, extras, cfg.notes)


def _folder(ref: str | None) -> Path | None:
    """The Hugging Face folder a model reference names, or None (a file, a zoo entry)."""
    if ref is None or ("::" in ref and not Path(ref).exists()):
        return None
    path = Path(ref)
    return path if path.is_dir() else None
