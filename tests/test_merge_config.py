"""mergekit's config as weightspace reads it: gradients and filters resolved as mergekit resolves them,
the keys it accepts without effect said once, and bad configs refused in one line."""

import pytest
import yaml

from weightspace.cli import main
from weightspace.errors import ConfigError
from weightspace.merge.config import evaluate, parse_merge_config
from weightspace.merge.plan import layer_of, stacks
from weightspace.merge.registry import REQUIRED

mergekit_config = pytest.importorskip("mergekit.config")

SETTINGS = [
    0.3, 1, True, [0, 0.3, 0.7, 1], [1, 0.7, 0.1], [0.5, 1.5], [True, False, True],
    [{"filter": "mlp", "value": 0.5}, {"value": 0}],
    [{"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]}, {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]},
     {"value": 0.5}],
    [{"filter": "mlp", "value": 2.0}],
    {"filter": "*", "value": [0.1, 0.9]},
]
TENSORS = ["model.layers.3.mlp.up_proj.weight", "model.layers.3.self_attn.q_proj.weight", "model.norm.weight"]


@pytest.mark.parametrize("setting", SETTINGS, ids=range(len(SETTINGS)))
def test_settings_resolve_as_mergekit_resolves_them(setting):
    from pydantic import TypeAdapter

    for kind, py in ((REQUIRED, float), (True, bool)):
        if kind is True and not _all_bools(setting):
            continue
        adapter = TypeAdapter(py)
        theirs_setting = (mergekit_config.ConditionalParameter(**setting) if isinstance(setting, dict) else
                          [mergekit_config.ConditionalParameter(**c) for c in setting]
                          if isinstance(setting, list) and setting and isinstance(setting[0], dict) else setting)
        for tensor in TENSORS:
            for t in (0.0, 1 / 9, 0.25, 0.5, 2 / 3, 0.99, 1.0):
                ours = evaluate(setting, tensor, t, kind, "p")
                theirs = mergekit_config.evaluate_setting(tensor, theirs_setting, t, validate=adapter.validate_python)
                assert ours == theirs and type(ours) is type(theirs), (tensor, t)


def _all_bools(setting):
    values = setting if isinstance(setting, list) else [setting]
    return all(isinstance(v, bool) for v in values)


def test_layers_are_found_by_name_in_any_architecture():
    assert layer_of("model.layers.12.mlp.down_proj.weight") == ("model.layers", 12, "mlp.down_proj.weight")
    assert layer_of("encoder.layer.0.attention.self.query.weight") == ("encoder.layer", 0, "attention.self.query.weight")
    assert layer_of("lm_head.weight") is None
    assert stacks(dict.fromkeys(["transformer.h.0.attn.c_attn.weight", "transformer.h.11.mlp.c_fc.weight",
                                 "transformer.wte.weight"])) == {"transformer.h": 12}


def test_keys_without_effect_are_noted_once():
    cfg = parse_merge_config({"merge_method": "ties", "base_model": "b", "dtype": "float16",
                              "models": [{"model": "a", "parameters": {"weight": 1}}],
                              "parameters": {"int8_mask": True, "normalize": True}})
    assert len(cfg.notes) == 1 and "int8_mask" in cfg.notes[0]
    sliced = parse_merge_config({"merge_method": "passthrough", "slices": [
        {"sources": [{"model": "a", "layer_range": [0, 4]}], "residual_weight": 0.1}]})
    assert sliced.slices[0].sources[0].layer_range == (0, 4) and "residual_weight" in sliced.notes[0]
    assert parse_merge_config({"merge_method": "linear", "models": [{"model": "a"}],
                               "tokenizer": {"source": "base"}}).tokenizer_source == "base"


@pytest.mark.parametrize("raw,message", [
    ({"merge_method": "ties", "models": [{"model": "a"}], "modules": {"text": {}}}, "'modules'"),
    ({"merge_method": "ties", "models": [{"model": "a"}], "slices": []}, "exactly one of"),
    ({"merge_method": "linear", "models": [{"model": "a"}], "tokenizer_source": "union"}, "'union'"),
    ({"merge_method": "linear", "models": [{"model": "a"}], "tokenizer": {"source": "a", "tokens": {}}},
     "only {source"),
    ({"merge_method": "passthrough", "slices": [{"sources": [{"model": "a", "layer_range": [4, 2]}]}]}, "layer_range"),
    ({"merge_method": "linear", "slices": [{"sources": [{"model": "a", "layer_range": [0, 4]},
                                                       {"model": "b", "layer_range": [0, 3]}]}]}, "as many layers"),
    ({"merge_method": "ties", "models": [{"model": "a", "parameters": {"densty": 0.5}}]}, "not parameters"),
    ({"merge_method": "ties", "models": [{"model": "a", "parameters": {"normalize": True}}]}, "not per-model"),
    ({"merge_method": "ties", "models": [{"model": "a"}], "parameters": {"density": {"value": [0.1, {}]}}},
     "gradient"),
    ({"merge_method": "ties", "models": [{"model": "a"}], "out_dtype": "int8"}, "out_dtype"),
])
def test_bad_configs_are_refused(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_merge_config(raw)


def test_bad_values_and_models_are_one_line_on_the_command_line(tmp_path, capsys):
    import torch

    from weightspace.io import save_checkpoint

    save_checkpoint(tmp_path / "a.safetensors", {"w": torch.ones(2, 2)})
    save_checkpoint(tmp_path / "b.safetensors", {"w": torch.zeros(2, 2)})
    cases = [
        ({"merge_method": "ties", "models": [{"model": str(tmp_path / "a.safetensors")}],
          "base_model": str(tmp_path / "b.safetensors"), "parameters": {"density": "lots"}}, "expected a number"),
        ({"merge_method": "slerp", "base_model": str(tmp_path / "a.safetensors"),
          "models": [{"model": str(tmp_path / "a.safetensors")}]}, "at least 1"),
        ({"merge_method": "passthrough", "slices": [{"sources": [{"model": str(tmp_path / "a.safetensors"),
                                                                   "layer_range": [0, 2]}]}]}, "numbered layers"),
        ({"merge_method": "linear", "base_model": str(tmp_path / "a.safetensors"),
          "models": [{"model": str(tmp_path / "missing.safetensors")}]}, "no such file"),
    ]
    for config, message in cases:
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
        assert main(["merge", str(tmp_path / "c.yaml"), str(tmp_path / "o.safetensors"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert not (tmp_path / "o.safetensors").exists()
