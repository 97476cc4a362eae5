"""Real checkpoints at real scale: TinyLlama-shaped Hugging Face folders (1.1 B parameters: vocabulary
32,000, hidden 2,048, MLP 5,632, 22 layers, 4 key-value heads; random bf16 weights, one 2.2 GB
``model.safetensors`` each, as TinyLlama-1.1B ships), merged and analysed by weightspace and by the tools
users run today, in one run, each tool as its own process (peak RSS: ``getrusage`` of that process).

1. TIES of two fine-tunes onto their base (density 0.5, weight 0.5, ``dtype: bfloat16``):
   ``weightspace merge`` against ``mergekit-yaml``, same YAML file; outputs compared tensor by tensor.
2. mergekit's six example configs (``tests/data/mergekit_examples``, from its repository), the models
   replaced by these folders and the layer ranges scaled from the 40 layers of the 13B models they
   name to 22: each run by both tools, outputs compared (equal bits, or the largest difference).
3. ``weightspace analyze`` of the base folder (default options, no figures) against WeightWatcher
   0.7.7's ``analyze()`` on the same folder, stopped after ``--ww-timeout`` seconds.

Before each timed run the input files are read once, so that both tools start with them in the page
cache (otherwise whichever runs first pays for the disk). Both tools run with the machine's threads:
mergekit with torch's default, weightspace with ``--threads`` (default 2).

Fine-tunes are the base plus Gaussian noise (std 0.1 × the base's). Needs about 20 GB of free disk
(checked first); the folders are deleted afterwards unless ``--keep``. Run it alone
(``flock /tmp/heavy.lock python benchmarks/llm_scale.py``): it takes most of an hour on 2 cores.
``--layers 2`` (and smaller ``--vocab``/``--hidden``/``--intermediate``) try it at a small scale.
Last line: one JSON object with the figures, the ratios against mergekit / WeightWatcher included.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from weightspace.shards import SafetensorsSource, ShardWriter, TensorSpec

EXAMPLES = Path(__file__).resolve().parent.parent / "tests" / "data" / "mergekit_examples"
ROLES = {"psmathur/orca_mini_v3_13b": "m1", "garage-bAInd/Platypus2-13B": "m2", "WizardLM/WizardLM-13B-V1.2": "m3",
         "WizardLM/WizardMath-13B-V1.0": "m3", "TheBloke/Llama-2-13B-fp16": "base",
         "mistralai/Mistral-7B-Instruct-v0.2": "m1", "BioMistral/BioMistral-7B": "m2",
         "mistralai/Mistral-7B-v0.1": "base", "model_a": "base", "model_b": "m1"}
# Runs one command as this wrapper's only child and reports its wall time and peak RSS.
MEASURE = """
import json, resource, subprocess, sys, time
timeout = float(sys.argv[1]) or None
t = time.perf_counter()
with open(sys.argv[2], "w") as log:
    try:
        rc = subprocess.run(sys.argv[3:], stdout=log, stderr=subprocess.STDOUT, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
print(json.dumps({"rc": rc, "seconds": round(time.perf_counter() - t, 1),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)}))
"""


def llama_shapes(vocab: int, hidden: int, intermediate: int, layers: int, kv_dim: int) -> list[tuple[str, tuple]]:
    shapes = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes += [(p + "self_attn.q_proj.weight", (hidden, hidden)), (p + "self_attn.k_proj.weight", (kv_dim, hidden)),
                   (p + "self_attn.v_proj.weight", (kv_dim, hidden)), (p + "self_attn.o_proj.weight", (hidden, hidden)),
                   (p + "mlp.gate_proj.weight", (intermediate, hidden)), (p + "mlp.up_proj.weight", (intermediate, hidden)),
                   (p + "mlp.down_proj.weight", (hidden, intermediate)), (p + "input_layernorm.weight", (hidden,)),
                   (p + "post_attention_layernorm.weight", (hidden,))]
    return shapes + [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]


def write_folders(root: Path, args) -> dict[str, Path]:
    """base, m1, m2, m3: each a folder with config.json, a tokenizer and one model.safetensors, written
    tensor by tensor (the fine-tunes' noise drawn per tensor from per-model seeds)."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    heads, kv_heads = args.hidden // 64, max(1, args.hidden // 512)
    config = transformers.LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden,
                                      intermediate_size=args.intermediate, num_hidden_layers=args.layers,
                                      num_attention_heads=heads, num_key_value_heads=kv_heads,
                                      max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=False,
                                      torch_dtype="bfloat16", architectures=["LlamaForCausalLM"])
    shapes = llama_shapes(args.vocab, args.hidden, args.intermediate, args.layers, args.hidden // heads * kv_heads)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i + 3 for i in range(args.vocab - 3)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                                     eos_token="</s>")
    folders = {}
    for i, role in enumerate(("base", "m1", "m2", "m3")):
        folder = root / role
        folder.mkdir()
        config.to_json_file(folder / "config.json")
        tokenizer.save_pretrained(folder)
        writer = ShardWriter(folder, [(n, TensorSpec(s, torch.bfloat16)) for n, s in shapes], max_shard_bytes=0)
        for j, (name, shape) in enumerate(shapes):
            g = torch.Generator().manual_seed(j)
            base = torch.ones(shape) if name.endswith("norm.weight") else 0.02 * torch.randn(shape, generator=g)
            if i:
                base += 0.1 * base.abs().mean() * torch.randn(shape, generator=torch.Generator().manual_seed(1000 * i + j))
            writer.write(name, base.to(torch.bfloat16))
            del base
        writer.close()
        folders[role] = folder
    return folders


def adapt(node, folders: dict, layers: int, original_layers: int = 40):
    """A mergekit example with its models replaced by ``folders`` and its layer ranges scaled."""
    if isinstance(node, dict):
        return {k: (str(folders[ROLES[v]]) if k in ("model", "base_model") else
                    [round(x * layers / original_layers) for x in v] if k == "layer_range" else
                    adapt(v, folders, layers, original_layers)) for k, v in node.items()}
    if isinstance(node, list):
        return [adapt(v, folders, layers, original_layers) for v in node]
    return node


def measure(cmd: list[str], log: Path, timeout: float = 0) -> dict:
    out = subprocess.run([sys.executable, "-c", MEASURE, str(timeout), str(log), *cmd], capture_output=True, text=True,
                         check=True)
    result = json.loads(out.stdout)
    if result["rc"] not in (0, "timeout"):
        result["error"] = log.read_text()[-600:]
    return result


def compare(ours: Path, theirs: Path) -> dict:
    """Tensor by tensor: how many are equal bit for bit, and the largest difference of the others."""
    a, b = SafetensorsSource(ours), SafetensorsSource(theirs)
    if set(a.specs) != set(b.specs):
        return {"same_names": False, "only_ours": sorted(set(a.specs) - set(b.specs))[:5],
                "only_theirs": sorted(set(b.specs) - set(a.specs))[:5]}
    equal, worst, dtypes = 0, 0.0, set()
    for name in a.specs:
        x, y = a.read([name])[name], b.read([name])[name]
        dtypes.add(str(y.dtype).removeprefix("torch."))
        if x.dtype == y.dtype and torch.equal(x, y):
            equal += 1
        else:
            worst = max(worst, float((x.double() - y.double()).abs().max()))
    return {"tensors": len(a.specs), "equal": equal, "max_abs_diff": worst, "dtypes": sorted(dtypes)}


def warm(folders: list[Path]) -> None:
    """Read the models' files once, so that each tool starts with them in the page cache: otherwise
    whichever runs first pays for reading them from disk (seen: 95 s against 61 s for the same work)."""
    for folder in folders:
        for file in sorted(folder.glob("*.safetensors")):
            with open(file, "rb", buffering=0) as f:
                while f.readinto(_BUFFER):
                    pass


_BUFFER = bytearray(1 << 24)


def models_of(config: dict) -> list[Path]:
    refs = [config.get("base_model")] + [m["model"] for m in config.get("models", [])]
    refs += [s["model"] for sl in config.get("slices", []) for s in sl["sources"]]
    return [Path(r) for r in dict.fromkeys(r for r in refs if r)]


def merge_both(name: str, config: dict, work: Path, args) -> dict:
    path = work / f"{name}.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    ours, theirs = work / f"{name}-weightspace", work / f"{name}-mergekit"
    inputs = models_of(config)
    warm(inputs)
    row = {"weightspace": measure([sys.executable, "-m", "weightspace.cli", "merge", str(path), str(ours), "--quiet",
                                   "--threads", str(args.threads)], work / f"{name}-weightspace.log")}
    warm(inputs)
    mergekit = [str(Path(sys.executable).parent / "mergekit-yaml"), str(path), str(theirs), "--random-seed", "0",
                "--quiet"]
    row["mergekit"] = measure(mergekit, work / f"{name}-mergekit.log")
    if row["weightspace"]["rc"] == 0 and row["mergekit"]["rc"] == 0:
        row["outputs"] = compare(ours, theirs)
        row["peak_rss_ratio"] = round(row["weightspace"]["peak_rss_mb"] / row["mergekit"]["peak_rss_mb"], 3)
        row["time_ratio"] = round(row["weightspace"]["seconds"] / row["mergekit"]["seconds"], 3)
    shutil.rmtree(ours, ignore_errors=True)
    shutil.rmtree(theirs, ignore_errors=True)
    print(name, json.dumps(row), flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=tempfile.gettempdir(), help="where the folders are written (and deleted)")
    p.add_argument("--layers", type=int, default=22)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--intermediate", type=int, default=5632)
    p.add_argument("--threads", type=int, default=2, help="weightspace merge --threads (mergekit: torch's default)")
    p.add_argument("--ww-timeout", type=float, default=1200.0)
    p.add_argument("--skip-ties", action="store_true")
    p.add_argument("--skip-examples", action="store_true")
    p.add_argument("--examples", help="comma-separated example names to run (default: all six)")
    p.add_argument("--skip-ww", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the folders")
    args = p.parse_args()

    shapes = llama_shapes(args.vocab, args.hidden, args.intermediate, args.layers, args.hidden // (args.hidden // 64)
                          * max(1, args.hidden // 512))
    params = sum(torch.Size(s).numel() for _, s in shapes)
    need = params * 2 * 4 + params * 4 * 2 * 1.1  # four bf16 folders, and two float32 outputs at once
    free = shutil.disk_usage(args.root).free
    if free < need:
        sys.exit(f"{args.root}: {free / 1e9:.1f} GB free, the run needs {need / 1e9:.1f} GB")
    work = Path(tempfile.mkdtemp(prefix="llm-scale-", dir=args.root))
    res = {"parameters": params, "layers": args.layers, "cpus": os.cpu_count(), "load_before": os.getloadavg()[0]}
    try:
        t = time.perf_counter()
        folders = write_folders(work, args)
        res["write_folders_s"] = round(time.perf_counter() - t, 1)
        res["folder_bytes"] = (folders["base"] / "model.safetensors").stat().st_size
        print(f"wrote 4 folders of {res['folder_bytes'] / 1e9:.2f} GB in {res['write_folders_s']} s", flush=True)

        ties = {"merge_method": "ties", "base_model": str(folders["base"]), "dtype": "bfloat16",
                "models": [{"model": str(folders[m]), "parameters": {"density": 0.5, "weight": 0.5}}
                           for m in ("m1", "m2")]}
        if not args.skip_ties:
            res["ties"] = merge_both("ties-2-models", ties, work, args)
        if not args.skip_examples:
            chosen = sorted(EXAMPLES.glob("*.yml"))
            if args.examples:
                chosen = [f for f in chosen if f.stem in args.examples.split(",")]
            res["examples"] = {f.stem: merge_both(f.stem, adapt(yaml.safe_load(f.read_text()), folders, args.layers),
                                                  work, args) for f in chosen}
        warm([folders["base"]])
        res["analyze"] = measure([sys.executable, "-m", "weightspace.cli", "analyze", str(folders["base"]), "--quiet",
                                  "--out", str(work / "analysis")], work / "analyze.log")
        print("analyze", json.dumps(res["analyze"]), flush=True)
        if not args.skip_ww:
            ww = ("import logging, weightwatcher as ww; logging.disable(logging.WARNING); "
                  f"print(ww.WeightWatcher(model={str(folders['base'])!r}).analyze().shape)")
            warm([folders["base"]])
            res["weightwatcher"] = measure([sys.executable, "-c", ww], work / "ww.log", timeout=args.ww_timeout)
            print("weightwatcher", json.dumps(res["weightwatcher"]), flush=True)
            if res["weightwatcher"]["rc"] == 0:
                res["analyze_time_ratio"] = round(res["analyze"]["seconds"] / res["weightwatcher"]["seconds"], 3)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    res["load_after"] = os.getloadavg()[0]
    print(json.dumps(res))


if __name__ == "__main__":
    main()
