"""Merged Hugging Face folders: small Llama-shaped models (transformers' ``LlamaConfig``, random bf16
weights, written here, sharded, with a tokenizer) merged by ``weightspace merge`` into folders that
transformers loads as the model the merged tensors make; and mergekit's six example configs run by
both tools on the same folders, outputs equal bit for bit."""

from pathlib import Path

import pytest
import torch
import yaml

from weightspace.cli import main
from weightspace.io import load_hf_folder

transformers = pytest.importorskip("transformers")
mergekit_merge = pytest.importorskip("mergekit.merge")
from mergekit.config import MergeConfiguration

LAYERS = 10
EXAMPLES = Path(__file__).parent / "data" / "mergekit_examples"
# the models mergekit's examples name → the roles of the folders written here
ROLES = {"psmathur/orca_mini_v3_13b": "m1", "garage-bAInd/Platypus2-13B": "m2", "WizardLM/WizardLM-13B-V1.2": "m3",
         "WizardLM/WizardMath-13B-V1.0": "m3", "TheBloke/Llama-2-13B-fp16": "base",
         "mistralai/Mistral-7B-Instruct-v0.2": "m1", "BioMistral/BioMistral-7B": "m2",
         "mistralai/Mistral-7B-v0.1": "base", "model_a": "base", "model_b": "m1"}


def adapt(node, folders: dict, layers: int, original_layers: int = 40):
    """A mergekit example with its models replaced by ``folders`` and its layer ranges scaled."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in ("model", "base_model"):
                out[key] = str(folders[ROLES[value]])
            elif key == "layer_range":
                out[key] = [round(v * layers / original_layers) for v in value]
            else:
                out[key] = adapt(value, folders, layers, original_layers)
        return out
    if isinstance(node, list):
        return [adapt(v, folders, layers, original_layers) for v in node]
    return node


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i + 3 for i in range(61)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="<s>",
                                                eos_token="</s>")


def _config(layers=LAYERS):
    return transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
                                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                    tie_word_embeddings=False)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A base and three fine-tunes (base + small seeded noise), bf16, in shards of ≤ 50 KB."""
    root = tmp_path_factory.mktemp("llama")
    torch.manual_seed(0)
    base = transformers.LlamaForCausalLM(_config()).to(torch.bfloat16).state_dict()
    g = torch.Generator().manual_seed(1)
    out = {}
    for i, name in enumerate(("base", "m1", "m2", "m3")):
        sd = base if i == 0 else {k: (v.float() + 0.02 * torch.randn(v.shape, generator=g)).to(v.dtype)
                                  for k, v in base.items()}
        model = transformers.LlamaForCausalLM(_config()).to(torch.bfloat16)
        model.load_state_dict(sd)
        model.save_pretrained(root / name, max_shard_size="50KB")
        _tokenizer().save_pretrained(root / name)
        out[name] = root / name
    assert (out["base"] / "model.safetensors.index.json").is_file()
    return out


def _merge(tmp_path, config: dict, out: Path, *extra) -> None:
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["merge", str(path), str(out), "--quiet", *extra]) == 0


def _logits(model, tokens):
    with torch.no_grad():
        return model(tokens).logits


@pytest.mark.parametrize("case", ["ties-gradient", "passthrough-slices"])
def test_merged_folder_loads_in_transformers_as_its_tensors(folders, tmp_path, case):
    if case == "ties-gradient":
        config = {"merge_method": "ties", "base_model": str(folders["base"]), "dtype": "bfloat16",
                  "models": [{"model": str(folders["m1"]), "parameters": {"weight": 0.6, "density": 0.5}},
                             {"model": str(folders["m2"]), "parameters": {"weight": [0.2, 0.9], "density": 0.7}}],
                  "chat_template": "chatml"}
        layers = LAYERS
    else:
        config = {"merge_method": "passthrough", "dtype": "float32",
                  "slices": [{"sources": [{"model": str(folders["m1"]), "layer_range": [0, 6]}]},
                             {"sources": [{"model": str(folders["m2"]), "layer_range": [4, 10]}]}]}
        layers = 12
    out = tmp_path / "merged"
    _merge(tmp_path, config, out, "--out-shard-size", "40K")
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) >= 2 and (out / "model.safetensors.index.json").is_file()
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "merge.yaml"} <= {p.name for p in out.iterdir()}

    loaded = transformers.AutoModelForCausalLM.from_pretrained(out)
    merged = load_hf_folder(out)
    dtype = next(iter(merged.values())).dtype
    assert loaded.config.num_hidden_layers == layers and loaded.dtype == dtype
    built = transformers.AutoModelForCausalLM.from_config(loaded.config, dtype=dtype).eval()
    built.load_state_dict(merged, strict=True)
    tokens = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    assert torch.equal(_logits(loaded, tokens), _logits(built, tokens))

    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert tokenizer("w1 w2")["input_ids"] == [4, 5]
    if "chat_template" in config:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "w1"}], tokenize=False)
        assert text.startswith("<|im_start|>user\nw1<|im_end|>")


CASES = sorted(p.stem for p in EXAMPLES.glob("*.yml")) + ["dare_ties-seeded"]


@pytest.mark.parametrize("name", CASES)
def test_mergekit_examples_equal_mergekit(folders, tmp_path, name):
    if name == "dare_ties-seeded":  # random sparsification: the same draws for the same seed
        config = {"merge_method": "dare_ties", "base_model": str(folders["base"]), "dtype": "bfloat16",
                  "models": [{"model": str(folders[m]), "parameters": {"weight": 0.5, "density": 0.6}}
                             for m in ("m1", "m2", "m3")]}
    else:
        config = adapt(yaml.safe_load((EXAMPLES / f"{name}.yml").read_text()), folders, LAYERS)
    seed = 7
    _merge(tmp_path, {**config, "seed": seed}, tmp_path / "ours")
    mergekit_merge.run_merge(MergeConfiguration.model_validate(config), str(tmp_path / "theirs"),
                             mergekit_merge.MergeOptions(quiet=True, random_seed=seed, write_model_card=False))
    ours, theirs = load_hf_folder(tmp_path / "ours"), load_hf_folder(tmp_path / "theirs")
    assert list(ours) == sorted(ours, key=list(theirs).index) or set(ours) == set(theirs)
    assert set(ours) == set(theirs)
    for key in theirs:
        assert ours[key].dtype == theirs[key].dtype, key
        assert torch.equal(ours[key], theirs[key]), key
    for folder in ("ours", "theirs"):
        assert transformers.AutoConfig.from_pretrained(tmp_path / folder).num_hidden_layers == \
            transformers.AutoConfig.from_pretrained(tmp_path / "theirs").num_hidden_layers


def test_tokenizer_and_template_problems_stop_the_merge_before_it_starts(folders, tmp_path, capsys):
    small = tmp_path / "small-vocab"
    small.mkdir()
    (small / "config.json").write_text('{"vocab_size": 32}')
    base = {"merge_method": "linear", "models": [{"model": str(folders["m1"])}, {"model": str(folders["m2"])}]}
    cases = [({**base, "chat_template": "auto"}, "none of the models has a chat template"),
             ({**base, "tokenizer_source": "base"}, "there is no base_model"),
             ({**base, "tokenizer_source": str(small)}, "vocabulary of 32, the merged model 64")]
    for i, (config, message) in enumerate(cases):
        path = tmp_path / f"c{i}.yaml"
        path.write_text(yaml.safe_dump(config))
        assert main(["merge", str(path), str(tmp_path / f"out{i}"), "--quiet"]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / f"out{i}").exists()
