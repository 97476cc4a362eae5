"""Knowledge regions in weight space (Gueta et al. 2023): where do fine-tunes of one skill lie?

One base model is fine-tuned on derived tasks (class subsets and groupings of a data set) from
several task *families*, a few seeds each; every checkpoint goes to one zoo with its ``task``,
``family``, ``role`` and ``start`` in the index. The analysis asks how tightly models cluster by task
and by family (k-means adjusted Rand index, silhouette, intra/inter distance ratio, 2-D embeddings),
whether convex combinations of one task's fine-tunes work as well as the fine-tunes themselves, and
whether fine-tuning a held-out task of a family from the family's centroid beats starting from the
base model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..align import l2_distances
from ..data import Dataset, load_dataset
from ..errors import ConfigError, ZooError
from ..nets import build_architecture
from ..space import WeightSpace
from ..task import Task
from ..zoo import Zoo
from ..zoo.build import architecture_for, build_zoo
from ..zoo.config import read_config
from ..zoo.train import train_population
from ..zoo.trainer import HParams, Run, TrainConfig

REGIONS_JSON = "regions.json"
EMBEDDINGS = ("pca", "tsne", "umap")


# ----------------------------------------------------------------------------- derived tasks


def derived_dataset(dataset: Dataset, classes: Sequence[Sequence[int]], name: str) -> Dataset:
    """A task made from ``dataset``: each group ``classes[i]`` of original labels becomes one class,
    labelled by the group's first original label; examples of classes in no group are dropped.
    ``[[0], [2], [4]]`` is a 3-way subset, ``[[0, 2], [5, 7]]`` a binary task (labels 0 and 5).

    Keeping original label ids keeps the base model's output units meaningful: relabelling the
    subset {5, 7, 9} as {0, 1, 2} made fine-tunes re-learn the head and travel 3–4× as far from the
    base as the others (measured on ``regions-fashion``), some of them to chance accuracy."""
    groups = [[int(c) for c in g] for g in classes]
    flat = [c for g in groups for c in g]
    if len(groups) < 2 or len(set(flat)) != len(flat) or not all(0 <= c < dataset.num_classes for c in flat):
        raise ConfigError(f"task {name!r}: classes must be ≥ 2 disjoint groups of labels in "
                          f"0..{dataset.num_classes - 1}, got {classes!r}")
    relabel = torch.full((dataset.num_classes,), -1, dtype=torch.long)
    for g in groups:
        relabel[g] = g[0]
    parts = {}
    for split in ("train", "val", "test"):
        x, y = dataset.split(split)
        new = relabel[y]
        keep = new >= 0
        parts[f"x_{split}"], parts[f"y_{split}"] = x[keep], new[keep]
    info = {**dataset.describe(), "derived": {"task": name, "classes": groups}}
    return replace(dataset, name=f"{dataset.name}:{name}", info=info, **parts)


# ----------------------------------------------------------------------------- config and building

REGION_KEYS = {"name", "base", "finetune", "tasks", "held_out"}
# A held-out task's centroid start: the family members' mean body with the base's output layer
# ("base", as Gueta et al. start from the region's centroid with a head of the target's own: the
# members' heads encode their labellings, not the target's), or the members' mean head too ("centroid").
CENTROID_HEADS = ("base", "centroid")


def resolve_regions_config(raw: Mapping) -> dict:
    """Check a regions config (see ``configs/regions-fashion.yaml``); errors name the key."""
    unknown = set(raw) - REGION_KEYS
    if unknown:
        raise ConfigError(f"regions config: unknown keys {sorted(unknown)}; allowed: {sorted(REGION_KEYS)}")
    for key in ("base", "tasks"):
        if key not in raw:
            raise ConfigError(f"regions config: missing {key!r}")
    tasks = list(raw["tasks"])
    names = [t.get("name") for t in tasks]
    if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"tasks: every task needs a unique name, got {names}")
    for t in tasks:
        if not {"name", "family", "classes"} <= set(t):
            raise ConfigError(f"tasks: task {t.get('name')!r} needs name, family and classes; got {sorted(t)}")
    _reject_nested_tasks(tasks, raw["base"].get("dataset"))
    held_out = list(raw.get("held_out") or [])
    families = {t["family"] for t in tasks}
    for h in held_out:
        if h not in names:
            raise ConfigError(f"held_out: {h!r} is not a task; tasks: {names}")
        fam = next(t["family"] for t in tasks if t["name"] == h)
        if all(t["family"] != fam or t["name"] in held_out for t in tasks):
            raise ConfigError(f"held_out: family {fam!r} of {h!r} has no other task to take a centroid from")
    ft = dict(raw.get("finetune") or {})
    unknown = set(ft) - {"seeds", "hparams", "training", "centroid_head"}
    if unknown:
        raise ConfigError(f"finetune: unknown keys {sorted(unknown)}; allowed: ['centroid_head', 'hparams', 'seeds', "
                          "'training']")
    head = ft.get("centroid_head", "base")
    if head not in CENTROID_HEADS:
        raise ConfigError(f"finetune.centroid_head: expected one of {list(CENTROID_HEADS)}, got {head!r}")
    HParams(**(ft.get("hparams") or {}))  # validates
    TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in (ft.get("training") or {}).items()})
    return {"name": str(raw.get("name", "regions")), "base": dict(raw["base"]), "tasks": tasks,
            "held_out": held_out, "families": sorted(families),
            "finetune": {"seeds": int(ft.get("seeds", 4)), "hparams": dict(ft.get("hparams") or {}), "centroid_head": head,
                         "training": dict(ft.get("training") or {})}}


def _reject_nested_tasks(tasks: Sequence[Mapping], base_dataset) -> None:
    """Two tasks on one data set where every (class, label) pair of one is also a pair of the other
    are one objective on nested data, not two data sets: their fine-tunes land together (on
    ``regions-fashion``, trouser-vs-dress inside trouser/dress/bag merged under k-means), so a
    clustering "by data set" cannot separate them. Rejected, naming both tasks."""
    def pairs(t):
        try:
            return frozenset((int(c), int(g[0])) for g in t["classes"] for c in g)
        except (TypeError, ValueError, IndexError):
            raise ConfigError(f"tasks: task {t['name']!r}: classes must be lists of label ids, "
                              f"got {t['classes']!r}") from None

    keyed = [(json.dumps(t.get("dataset") or base_dataset, sort_keys=True), pairs(t), t["name"]) for t in tasks]
    for i, (data_a, a, name_a) in enumerate(keyed):
        for data_b, b, name_b in keyed[i + 1:]:
            if data_a == data_b and (a <= b or b <= a):
                small, big = (name_a, name_b) if a <= b else (name_b, name_a)
                raise ConfigError(f"tasks: {small!r} is {big!r} restricted to fewer classes (same data set, "
                                  f"same labels); give one of them a different grouping or data set")


def task_dataset(config: Mapping, task: Mapping) -> Dataset:
    """The data of one task of a resolved regions config (its own data set, else the base's)."""
    data = dict(task.get("dataset") or config["base"]["dataset"])
    if config["base"]["architecture"].get("kind") == "cnn":
        data.setdefault("image", True)
    return derived_dataset(load_dataset(data.pop("name"), **data), task["classes"], task["name"])


def build_regions(source, out: str | Path, *, progress: bool = True) -> Zoo:
    """Train the base, every task's fine-tunes, and the held-out tasks from base and from centroid.

    Resumable like :func:`~weightspace.zoo.build.build_zoo`: finished checkpoints are kept.
    """
    cfg = resolve_regions_config(read_config(source))
    out = Path(out)
    base_zoo = build_zoo(cfg["base"], out=out / "base", progress=progress)
    base_w, base_df = base_zoo.load()
    base = base_w[int(np.argmax(base_df["step"].to_numpy()))]
    base_data = load_dataset(base_zoo.info["task"]["name"], **base_zoo.info["task"].get("options", {}))
    arch = architecture_for(base_zoo.info["architecture"], base_data)
    cfg["base"]["architecture"] = arch.config
    zoo = Zoo.create(out, arch.space, architecture=arch.config, task=base_data.describe(), config=cfg)
    (out / REGIONS_JSON).write_text(json.dumps(cfg, indent=2))
    ft = cfg["finetune"]
    train_cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in ft["training"].items()})
    hp = HParams(**ft["hparams"])

    def finetune(task, start_name, init, role):
        runs = [Run(f"{task['name']}-{start_name}-s{k}", k, hp) for k in range(ft["seeds"])]
        tags = {"task": task["name"], "family": task["family"], "role": role, "start": start_name}
        train_population(arch, task_dataset(cfg, task), runs, zoo, train_cfg, init=init, extra=tags,
                         progress=progress)

    for task in cfg["tasks"]:
        if task["name"] not in cfg["held_out"]:
            finetune(task, "base", base, "region")
    for name in cfg["held_out"]:
        task = next(t for t in cfg["tasks"] if t["name"] == name)
        w, df = region_table(zoo)
        members = region_checkpoints(df)
        members = members[members["family"] == task["family"]]
        centroid = rows_of(w, members).mean(0)
        if ft["centroid_head"] == "base":
            centroid = torch.where(head_mask(arch.space), base, centroid)
        finetune(task, "base", base, "held-out")
        finetune(task, "centroid", centroid, "held-out")
    return zoo


def head_mask(space: WeightSpace) -> Tensor:
    """Boolean ``Tensor[P]``: the output layer's coordinates, i.e. the tensors whose first axis no
    permutation group covers (the logits' weights and bias)."""
    grouped = {name for g in space.groups for name, axis in g.axes if axis == 0}
    mask = torch.zeros(space.num_params, dtype=torch.bool)
    for e in space.entries:
        if e.name not in grouped:
            mask[space.slice(e.name)] = True
    return mask


# ----------------------------------------------------------------------------- reading


def region_table(zoo: Zoo) -> tuple[Tensor, pd.DataFrame]:
    """All weights and the index with the region tags (``task``, ``family``, ``role``, ``start``) as columns."""
    w, df = zoo.load()
    extra = pd.json_normalize([json.loads(e) if e else {} for e in df["extra"]])
    extra.index = df.index
    return w, pd.concat([df, extra[[c for c in extra.columns if c not in df.columns]]], axis=1)


def final_checkpoints(table: pd.DataFrame) -> pd.DataFrame:
    """The last checkpoint of every run (rows keep their index, so they select weights)."""
    return table.loc[table.groupby("run_id")["step"].idxmax().to_numpy()]


def region_checkpoints(table: pd.DataFrame) -> pd.DataFrame:
    """The last checkpoint of every run that makes up a region: all runs, less the held-out tasks'
    fine-tunes when the table tags roles."""
    final = final_checkpoints(table)
    if "role" in final:
        final = final[final["role"].fillna("region") == "region"]
    return final


def rows_of(weights: Tensor, rows: pd.DataFrame) -> Tensor:
    """The weights of the index rows ``rows`` (a selection of the table :func:`region_table` returned)."""
    return weights[torch.tensor(rows.index.to_numpy())]


def regions_task(zoo: Zoo, name: str) -> Task:
    """The data and architecture that score a task of a regions zoo."""
    path = Path(zoo.root) / REGIONS_JSON
    if not path.exists():
        raise ZooError(f"{zoo.root}: no {REGIONS_JSON}; in-region accuracy needs a zoo built by build_regions")
    cfg = json.loads(path.read_text())
    task = next((t for t in cfg["tasks"] if t["name"] == name), None)
    if task is None:
        raise ConfigError(f"task {name!r} is not in {path}")
    return Task(task_dataset(cfg, task), build_architecture(zoo.info["architecture"]))


# ----------------------------------------------------------------------------- metrics


def cluster_metrics(x: Tensor, labels: Sequence, seed: int = 0) -> dict[str, float]:
    """How well rows of ``x`` group by ``labels``: ARI of k-means (k = number of labels), silhouette,
    and mean intra-label over mean inter-label distance (below 1: tighter inside than between)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, silhouette_score

    codes, uniques = pd.factorize(np.asarray(labels))
    if len(uniques) < 2 or len(uniques) >= len(codes):
        raise ConfigError(f"cluster metrics need between 2 and {len(codes) - 1} labels, got {len(uniques)}")
    xn = x.double().numpy()
    found = KMeans(len(uniques), n_init=10, random_state=seed).fit_predict(xn)
    dist = l2_distances(x.double(), x.double())
    same = torch.from_numpy(codes[:, None] == codes[None, :])
    off = ~torch.eye(len(codes), dtype=torch.bool)
    return {"ari": float(adjusted_rand_score(codes, found)),
            "silhouette": float(silhouette_score(xn, codes)),
            "intra_inter_ratio": float(dist[same & off].mean() / dist[~same].mean()),
            "groups": len(uniques), "models": len(codes), "seed": seed}


def group_separation(x: Tensor, labels: Sequence) -> pd.DataFrame:
    """Per label: mean distance between its rows (``within``), the label whose rows are nearest on
    average (``nearest``, at mean distance ``between``), and ``between / within``. A ratio near 1
    means seed-to-seed spread is as large as the gap to another label's region, so no clustering
    can be expected to tell the two apart."""
    codes, uniques = pd.factorize(np.asarray(labels))
    onehot = torch.nn.functional.one_hot(torch.from_numpy(codes), len(uniques)).double()
    sums = onehot.T @ l2_distances(x.double(), x.double()) @ onehot  # [G, G] sums of distances between label blocks
    n = onehot.sum(0)
    pairs = n[:, None] * n[None, :] - torch.diag(n)  # ordered pairs, self-pairs excluded inside a label
    mean = sums / pairs
    within = mean.diagonal().clone()
    between = mean + torch.diag(torch.full_like(within, float("inf")))
    nearest = between.argmin(1)
    gap = between.gather(1, nearest[:, None])[:, 0]
    return pd.DataFrame({"group": uniques, "members": n.long().numpy(), "within": within.numpy(),
                         "nearest": uniques[nearest.numpy()], "between": gap.numpy(),
                         "ratio": (gap / within).numpy()})


def embed(x: Tensor, method: str, seed: int = 0) -> np.ndarray:
    """2-D embedding of the rows of ``x``: PCA, t-SNE or UMAP (umap-learn)."""
    xn = x.double().numpy()
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(2, random_state=seed).fit_transform(xn)
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(2, perplexity=min(30.0, (len(xn) - 1) / 3), random_state=seed, init="pca").fit_transform(xn)
    if method == "umap":
        try:
            import umap
        except ImportError:
            raise ConfigError("embedding 'umap' needs umap-learn (pip install umap-learn)") from None
        return umap.UMAP(n_components=2, random_state=seed, n_jobs=1,
                         n_neighbors=min(15, len(xn) - 1)).fit_transform(xn)
    raise ConfigError(f"embedding: expected one of {list(EMBEDDINGS)}, got {method!r}")


def convex_combinations(members: Tensor, n: int, seed: int = 0) -> Tensor:
    """``n`` points inside the convex hull of ``members: Tensor[m, P]`` (flat-Dirichlet weights)."""
    g = torch.Generator().manual_seed(seed)
    coeffs = -torch.log(torch.rand(n, len(members), generator=g, dtype=torch.float64))
    coeffs = coeffs / coeffs.sum(1, keepdim=True)
    return (coeffs @ members.double()).to(members.dtype)


# ----------------------------------------------------------------------------- the analysis


@dataclass
class KnowledgeRegions:
    """Clustering, embeddings, in-region accuracy and centroid starts of a regions zoo.

    ``by``: the index column whose values are the regions (``task``, ``family``, or any other).
    Uses each run's last checkpoint. After :meth:`fit`: ``metrics_`` (one row per grouping),
    ``separation_`` (per region of ``by``: seed spread against the gap to the nearest other region),
    ``embedding_`` (x, y per model and method), ``interior_`` (per region whose members share one
    task: members' against convex combinations' accuracy), ``starts_`` (held-out tasks: final accuracy
    from the base and from the centroid, seeds where the centroid start wins, paired by seed, and
    each start's own accuracy before fine-tuning when step 0 was saved), ``start_curve_`` (every
    held-out checkpoint: start, seed, step, test accuracy).
    """

    by: str = "task"
    embeddings: tuple[str, ...] = EMBEDDINGS
    interior_samples: int = 32
    seed: int = 0

    def fit(self, zoo: Zoo) -> KnowledgeRegions:
        w, table = region_table(zoo)
        if self.by not in table:
            raise ConfigError(f"--by {self.by!r} is not a column of {zoo.root}; columns: {list(table.columns)}")
        final = region_checkpoints(table)
        final = final[final[self.by].notna()]
        x = rows_of(w, final)
        groupings = [self.by] + [c for c in ("task", "family") if c in final and c != self.by]
        self.metrics_ = pd.DataFrame([{"by": c, **cluster_metrics(x, final[c].to_numpy(), self.seed)}
                                      for c in groupings])
        self.separation_ = group_separation(x, final[self.by].to_numpy())
        rows = []
        for method in self.embeddings:
            xy = embed(x, method, self.seed)
            rows.append(pd.DataFrame({"method": method, "model_id": final["model_id"].to_numpy(),
                                      "x": xy[:, 0], "y": xy[:, 1],
                                      **{c: final[c].to_numpy() for c in groupings}}))
        self.embedding_ = pd.concat(rows, ignore_index=True)
        self.interior_ = self._interior(zoo, w, final)
        self.starts_, self.start_curve_ = self._starts(table)
        return self

    def _interior(self, zoo, w, final) -> pd.DataFrame:
        if "task" not in final or not (Path(zoo.root) / REGIONS_JSON).exists():
            return pd.DataFrame()
        rows = []
        for value, members in final.groupby(self.by):
            tasks = members["task"].unique()
            if len(tasks) != 1 or len(members) < 2:
                continue
            task = regions_task(zoo, tasks[0])
            mw = rows_of(w, members)
            member_acc = task.accuracy(mw).numpy()
            inside = task.accuracy(convex_combinations(mw, self.interior_samples, self.seed)).numpy()
            rows.append({"region": value, "task": tasks[0], "members": len(members),
                         "member_acc_mean": member_acc.mean(), "member_acc_min": member_acc.min(),
                         "interior_acc_mean": inside.mean(), "interior_acc_min": inside.min(),
                         "interior_at_least_member_min": float((inside >= member_acc.min()).mean()),
                         "samples": self.interior_samples, "seed": self.seed})
        return pd.DataFrame(rows)

    @staticmethod
    def _starts(table) -> tuple[pd.DataFrame, pd.DataFrame]:
        if "role" not in table or not (table["role"] == "held-out").any():
            return pd.DataFrame(), pd.DataFrame()
        keys = ["family", "task"]
        held = table[table["role"] == "held-out"]
        curve = held[[*keys, "start", "seed", "step", "test_acc"]].sort_values([*keys, "start", "seed", "step"])
        final = final_checkpoints(held)
        acc = final.pivot_table(index=keys, columns="start", values="test_acc", aggfunc="mean")
        acc["centroid_minus_base"] = acc["centroid"] - acc["base"]
        paired = final.pivot_table(index=[*keys, "seed"], columns="start", values="test_acc")
        acc["centroid_wins"] = (paired["centroid"] > paired["base"]).groupby(level=keys).sum()
        acc["ties"] = (paired["centroid"] == paired["base"]).groupby(level=keys).sum()
        acc["seeds"] = paired.groupby(level=keys).size()
        before = held[held["step"] == 0].pivot_table(index=keys, columns="start", values="test_acc", aggfunc="mean")
        for start in ("base", "centroid"):  # the starting point's own accuracy, when step 0 was saved
            acc[f"{start}_acc_before"] = before.get(start, np.nan)
        starts = acc.reset_index().rename(columns={"base": "base_start_acc", "centroid": "centroid_start_acc"})
        starts.columns.name = None
        return starts, curve.reset_index(drop=True)
