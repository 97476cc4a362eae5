"""What makes a merged folder one that Hugging Face tools load: the donor's ``config.json`` (its layer
count and dtype updated), the tokenizer files of the base model or of ``tokenizer_source``, and the
chat template the config asks for."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

from ..errors import ConfigError
from ..safe_input import MAX_CONFIG_BYTES, read_bytes, read_json

TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer.model",
                   "added_tokens.json", "merges.txt", "vocab.json", "vocab.txt", "chat_template.jinja",
                   "chat_template.json", "generation_config.json")
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
# ChatML (OpenAI's chat markup): the one template known by name; others are given as Jinja text
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def write_config(out: Path, donor: Path | None, layers: dict[str, tuple[int, int]], dtype: str | None) -> Path | None:
    """The donor's ``config.json`` with its layer count set to the output's (where the merge changed it)
    and its dtype to ``dtype``; None when the donor has none."""
    if donor is None or not (donor / "config.json").is_file():
        return None
    config = read_json(donor / "config.json", "model config", limit=MAX_CONFIG_BYTES)
    if not isinstance(config, dict):
        raise ConfigError(f"{donor / 'config.json'}: expected a JSON object")
    for before, after in layers.values():
        if before != after:
            for key in LAYER_KEYS:
                if config.get(key) == before:
                    config[key] = after
    if dtype is not None:
        for key in ("torch_dtype", "dtype"):
            if key in config or key == "torch_dtype":
                config[key] = dtype
    path = out / "config.json"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def copy_tokenizer(out: Path, donor: Path | None) -> list[Path]:
    """The tokenizer files the donor folder has, copied."""
    if donor is None:
        return []
    copied = []
    for name in TOKENIZER_FILES:
        if (donor / name).is_file():
            shutil.copyfile(donor / name, out / name)
            copied.append(out / name)
    return copied


def chat_template_text(template: str, folders: list[Path]) -> str:
    """The Jinja text a config's ``chat_template`` names: ``auto`` (the one most of ``folders`` use),
    ``chatml``, or the text itself."""
    if template == "auto":
        found = [t for t in (_template_of(f) for f in folders) if t]
        if not found:
            raise ConfigError("chat_template: auto, but none of the models has a chat template")
        return Counter(found).most_common(1)[0][0]
    if template == "chatml":
        return CHATML
    if "{" not in template:
        raise ConfigError(f"chat_template: expected 'auto', 'chatml' or a Jinja template, got {template!r}")
    return template


def write_chat_template(out: Path, template: str) -> Path:
    """``chat_template.jinja``, and the template in ``tokenizer_config.json`` if there is one."""
    path = out / "chat_template.jinja"
    path.write_text(template)
    config_path = out / "tokenizer_config.json"
    if config_path.is_file():
        config = read_json(config_path, "tokenizer config")
        if isinstance(config, dict):
            config["chat_template"] = template
            config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    return path


def check_vocabulary(tokenizer: Path | None, donor: Path | None) -> None:
    """A tokenizer taken from another model must have the donor's vocabulary size: embeddings are not
    re-mapped to another vocabulary."""
    sizes = [_vocab_size(f) for f in (tokenizer, donor)]
    if None not in sizes and sizes[0] != sizes[1]:
        raise ConfigError(f"tokenizer_source: {tokenizer} has a vocabulary of {sizes[0]}, the merged model "
                          f"{sizes[1]}; re-mapping the embeddings to another vocabulary is not supported")


def _vocab_size(folder: Path | None) -> int | None:
    if folder is None or not (folder / "config.json").is_file():
        return None
    config = read_json(folder / "config.json", "model config", limit=MAX_CONFIG_BYTES)
    size = config.get("vocab_size") if isinstance(config, dict) else None
    return size if isinstance(size, int) else None


def _template_of(folder: Path) -> str | None:
    if (folder / "chat_template.jinja").is_file():
        return read_bytes(folder / "chat_template.jinja", MAX_CONFIG_BYTES, "chat template").decode().strip()
    if (folder / "tokenizer_config.json").is_file():
        config = read_json(folder / "tokenizer_config.json", "tokenizer config")
        template = config.get("chat_template") if isinstance(config, dict) else None
        if isinstance(template, dict):
            template = template.get("default")
        return template.strip() if isinstance(template, str) else None
    return None
