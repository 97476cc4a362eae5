"""Accuracy from weights alone: predictors with a scikit-learn shape, saved as files without pickle.

- :class:`GBTPredictor`: gradient-boosted trees (LightGBM) on :mod:`~weightspace.analysis.features`
  (Unterthiner et al. 2020). ``features="statistics"`` is their exact set, the baseline;
  ``"all"`` adds norms and Jin et al.'s weight correlation, ``"spectral"`` also each layer's spectral
  metrics (power-law α and WeightWatcher's norms). Saved as LightGBM's text model + JSON.
- :class:`NeuronSetPredictor`: the permutation-invariant network of
  :mod:`~weightspace.analysis.neuron_set`, saved as safetensors + JSON.
- :class:`ProbePredictor`: the models run on learned probe inputs (:mod:`~weightspace.analysis.probing`),
  their outputs and per-tensor statistics into an MLP; it needs the architecture, saved as safetensors + JSON.

All take ``Tensor[N, P]`` weights of one :class:`~weightspace.space.WeightSpace` (and, for those that
run the models, each model's activation when a zoo's runs drew them) and predict one number per model.
Evaluation splits by *run* (:func:`run_split`): a run's checkpoints stay together.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import ConfigError, LayoutError, WeightspaceError
from ..io import load_checkpoint, save_checkpoint
from ..nets import build_architecture
from ..saved import described_file, read_description, write_description
from ..space import WeightSpace
from ..zoo.build import model_activations
from .features import tensor_statistics, weight_features
from .neuron_set import NeuronSetNet, neuron_inputs
from .probing import ProbeNet, activation_architectures

PREDICTOR_JSON = "predictor.json"
PREDICTORS: dict[str, type[AccuracyPredictor]] = {}


def run_split(run_ids: Sequence[str], test_fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """Boolean mask of held-out rows: a seeded ``test_fraction`` of the *runs*, all their checkpoints."""
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction: expected a number strictly between 0 and 1, got {test_fraction!r}")
    runs = np.asarray(run_ids)
    unique = np.unique(runs)
    if len(unique) < 2:
        raise ConfigError(f"a run-level split needs at least 2 runs, got {len(unique)}")
    n_test = min(len(unique) - 1, max(1, round(test_fraction * len(unique))))
    held_out = np.random.default_rng(seed).permutation(unique)[:n_test]
    return np.isin(runs, held_out)


def scores(y_true, y_pred) -> dict[str, float]:
    """R², Kendall τ (τ-b) and RMSE of predictions."""
    from scipy.stats import kendalltau
    from sklearn.metrics import r2_score

    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    return {"r2": float(r2_score(y_true, y_pred)), "kendall_tau": float(kendalltau(y_true, y_pred).statistic),
            "rmse": float(np.sqrt(np.mean((y_true - y_pred) ** 2)))}


class AccuracyPredictor(ABC):
    """Abstract: ``fit(weights, y)``, ``predict(weights)``, ``save(dir)``; :func:`load_predictor` reads back.

    ``activations`` (one name per model, None for the architecture's own) says what function each
    model computes; only predictors that run the models read it.
    """

    kind: ClassVar[str]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            PREDICTORS[cls.kind] = cls

    def __init__(self, space: WeightSpace):
        self.space = space

    @abstractmethod
    def fit(self, weights: Tensor, y, *, activations: Sequence[str | None] | None = None,
            progress: bool = False) -> AccuracyPredictor: ...

    @abstractmethod
    def predict(self, weights: Tensor, *, activations: Sequence[str | None] | None = None) -> np.ndarray: ...

    @abstractmethod
    def config(self) -> dict:
        """JSON-ready constructor arguments other than the layout."""

    @abstractmethod
    def _save_state(self, directory: Path) -> dict:
        """Write what fit learned; return what else the JSON should hold."""

    @abstractmethod
    def _load_state(self, directory: Path, meta: dict) -> None: ...

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        extra = self._save_state(d)
        meta = {"kind": self.kind, "config": self.config(), "layout": json.loads(self.space.to_json()), **extra}
        write_description(d, PREDICTOR_JSON, meta)
        return d

    def _check(self, weights: Tensor) -> Tensor:
        if weights.dim() != 2 or weights.shape[1] != self.space.num_params:
            raise LayoutError(f"expected weights Tensor[N, {self.space.num_params}] for layout "
                              f"'{self.space.name}', got shape {tuple(weights.shape)}")
        if not bool(torch.isfinite(weights).all()):
            raise LayoutError("weights contain NaN or infinite values; drop those models first")
        return weights


def load_predictor(directory: str | Path) -> AccuracyPredictor:
    """A fitted predictor from a directory written by :meth:`AccuracyPredictor.save`."""
    d = Path(directory)
    meta = read_description(d, PREDICTOR_JSON, "accuracy predictor", {"kind": str, "config": dict, "layout": dict})
    if meta["kind"] not in PREDICTORS:
        raise ConfigError(f"{d / PREDICTOR_JSON}: kind {meta['kind']!r} is not one of {sorted(PREDICTORS)}")
    try:
        space = WeightSpace.from_json(json.dumps(meta["layout"]))
    except LayoutError as e:
        raise ConfigError(f"{d / PREDICTOR_JSON}: layout: {e}") from None
    try:
        pred = PREDICTORS[meta["kind"]](space, **meta["config"])
        pred._load_state(d, meta)
    except WeightspaceError:
        raise
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as e:
        raise ConfigError(f"{d}: not a saved {meta['kind']!r} predictor this weightspace reads "
                          f"({type(e).__name__}: {str(e)[:200]})") from None
    return pred


class GBTPredictor(AccuracyPredictor):
    """LightGBM regression on per-tensor weight features."""

    kind = "gbt"
    FEATURE_SETS = ("statistics", "all", "spectral")

    def __init__(self, space: WeightSpace, *, features: str = "all", n_estimators: int = 600,
                 learning_rate: float = 0.03, num_leaves: int = 31, min_child_samples: int = 10,
                 subsample: float = 0.8, colsample: float = 0.5, seed: int = 0):
        super().__init__(space)
        if features not in self.FEATURE_SETS:
            raise ConfigError(f"features: expected one of {list(self.FEATURE_SETS)}, got {features!r}")
        self.features, self.n_estimators, self.learning_rate = features, n_estimators, learning_rate
        self.num_leaves, self.min_child_samples = num_leaves, min_child_samples
        self.subsample, self.colsample, self.seed = subsample, colsample, seed
        self.booster_ = None

    def config(self) -> dict:
        return {k: getattr(self, k) for k in ("features", "n_estimators", "learning_rate", "num_leaves",
                                                "min_child_samples", "subsample", "colsample", "seed")}

    def featurise(self, weights: Tensor) -> pd.DataFrame:
        weights = self._check(weights)
        if self.features == "statistics":
            return tensor_statistics(weights, self.space, norms=False)
        return weight_features(weights, self.space, spectral=self.features == "spectral")

    def fit(self, weights, y, *, activations=None, progress=False):
        import lightgbm as lgb

        params = {"objective": "regression", "learning_rate": self.learning_rate, "num_leaves": self.num_leaves,
                  "min_data_in_leaf": self.min_child_samples, "bagging_fraction": self.subsample,
                  "bagging_freq": 1, "feature_fraction": self.colsample, "seed": self.seed,
                  "deterministic": True, "num_threads": 1, "verbosity": -1}
        data = lgb.Dataset(self.featurise(weights), label=np.asarray(y, dtype=np.float64))
        self.booster_ = lgb.train(params, data, num_boost_round=self.n_estimators)
        return self

    def predict(self, weights, *, activations=None):
        if self.booster_ is None:
            raise ConfigError("GBTPredictor: call fit() or load_predictor() before predict()")
        return self.booster_.predict(self.featurise(weights), num_threads=1)

    def importance(self) -> pd.DataFrame:
        """Total split gain per feature, largest first."""
        gain = self.booster_.feature_importance("gain")
        df = pd.DataFrame({"feature": self.booster_.feature_name(), "gain": gain})
        df["share"] = df["gain"] / df["gain"].sum()
        return df.sort_values("gain", ascending=False, ignore_index=True)

    def _save_state(self, directory):
        self.booster_.save_model(str(directory / "model.txt"))
        return {"model_file": "model.txt"}

    def _load_state(self, directory, meta):
        import lightgbm as lgb

        path = described_file(directory, meta, "model_file", "model.txt")
        if not path.is_file():
            raise ConfigError(f"{directory}: saved GBT predictor lacks {path.name}")
        self.booster_ = lgb.Booster(model_file=str(path))


def _train_mse(net: torch.nn.Module, forward, target: Tensor, settings, desc: str, progress: bool) -> torch.nn.Module:
    """AdamW with a one-cycle schedule on the mean squared error of ``forward(batch indices)``, batches
    drawn in an order seeded by ``settings.seed`` (``settings``: the predictor, for its epochs,
    batch_size, lr, weight_decay). Returns ``net`` in evaluation mode."""
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps = settings.epochs * -(-len(target) // settings.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.lr, total_steps=steps)
    gen = torch.Generator().manual_seed(settings.seed)
    net.train()
    for _ in tqdm(range(settings.epochs), desc=desc, unit="epoch", disable=not progress):
        for idx in torch.randperm(len(target), generator=gen).split(settings.batch_size):
            loss = torch.mean((forward(idx) - target[idx]) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


class NeuronSetPredictor(AccuracyPredictor):
    """The neuron-set network, trained with Adam on mean squared error of the standardised target."""

    kind = "neuron-set"

    def __init__(self, space: WeightSpace, *, hidden: int = 64, epochs: int = 150, batch_size: int = 128,
                 lr: float = 2e-3, weight_decay: float = 1e-4, seed: int = 0):
        super().__init__(space)
        self.hidden, self.epochs, self.batch_size = hidden, epochs, batch_size
        self.lr, self.weight_decay, self.seed = lr, weight_decay, seed
        self.net_, self.y_mean_, self.y_std_ = None, 0.0, 1.0

    def config(self) -> dict:
        return {k: getattr(self, k) for k in ("hidden", "epochs", "batch_size", "lr", "weight_decay", "seed")}

    def _inputs(self, weights: Tensor) -> tuple[list[Tensor], Tensor]:
        groups, free = neuron_inputs(self._check(weights).float(), self.space)
        return groups, torch.cat([free, torch.tensor(tensor_statistics(weights, self.space).to_numpy(), dtype=torch.float32)], 1)

    def _new_net(self, groups, free) -> NeuronSetNet:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return NeuronSetNet([g.shape[-1] for g in groups], free.shape[-1], self.hidden)

    def fit(self, weights, y, *, activations=None, progress=False):
        groups, free = self._inputs(weights)
        y = torch.as_tensor(np.asarray(y, dtype=np.float32))
        self.y_mean_, self.y_std_ = float(y.mean()), float(y.std().clamp_min(1e-8))
        target = (y - self.y_mean_) / self.y_std_
        net = self._new_net(groups, free)
        net.set_standardisation(groups, free)
        self.net_ = _train_mse(net, lambda idx: net([g[idx] for g in groups], free[idx]), target, self,
                               "neuron-set predictor", progress)
        return self

    @torch.no_grad()
    def predict(self, weights, *, activations=None):
        if self.net_ is None:
            raise ConfigError("NeuronSetPredictor: call fit() or load_predictor() before predict()")
        groups, free = self._inputs(weights)
        return (self.net_(groups, free) * self.y_std_ + self.y_mean_).double().numpy()

    def _save_state(self, directory):
        save_checkpoint(directory / "net.safetensors", {k: v.contiguous() for k, v in self.net_.state_dict().items()},
                        {"predictor": self.kind})
        return {"net_file": "net.safetensors", "group_dims": [len(getattr(self.net_, f"group{i}_mean"))
                                                              for i in range(len(self.net_.phis))],
                "free_dim": len(self.net_.free_mean), "y_mean": self.y_mean_, "y_std": self.y_std_}

    def _load_state(self, directory, meta):
        state, _ = load_checkpoint(described_file(directory, meta, "net_file", "net.safetensors"))
        net = NeuronSetNet(meta["group_dims"], meta["free_dim"], self.hidden)
        net.load_state_dict(state)
        self.net_, self.y_mean_, self.y_std_ = net.eval(), meta["y_mean"], meta["y_std"]


class ProbePredictor(AccuracyPredictor):
    """The models' outputs on learned probe inputs, with the per-tensor statistics, into an MLP
    (:class:`~weightspace.analysis.probing.ProbeNet`), trained with AdamW on mean squared error of the
    standardised target. ``architecture`` is the zoo's architecture config (``zoo.info["architecture"]``)."""

    kind = "probe"

    def __init__(self, space: WeightSpace, *, architecture: dict, probes: int = 64, latent: int = 32,
                 hidden: int = 256, dropout: float = 0.1, epochs: int = 40, batch_size: int = 128, lr: float = 1e-3,
                 weight_decay: float = 1e-4, seed: int = 0):
        super().__init__(space)
        arch = build_architecture(architecture)
        if arch.space.entries != space.entries:
            raise LayoutError(f"architecture '{arch.name}' does not have the layout '{space.name}'")
        self.arch, self.architecture = arch, json.loads(json.dumps(arch.config))  # as saved and loaded
        self.probes, self.latent, self.hidden, self.dropout = probes, latent, hidden, dropout
        self.epochs, self.batch_size, self.lr, self.weight_decay, self.seed = epochs, batch_size, lr, weight_decay, seed
        self.net_, self.y_mean_, self.y_std_ = None, 0.0, 1.0

    def config(self) -> dict:
        return {k: getattr(self, k) for k in ("architecture", "probes", "latent", "hidden", "dropout", "epochs",
                                                "batch_size", "lr", "weight_decay", "seed")}

    def _inputs(self, weights, activations):
        weights = self._check(weights).float()
        stats = torch.tensor(tensor_statistics(weights, self.space).to_numpy(), dtype=torch.float32)
        return weights, stats, *activation_architectures(self.arch, activations, len(weights))

    def _new_net(self, stats_dim: int) -> ProbeNet:
        return ProbeNet(self.arch.input_shape, self.arch.out_features, stats_dim, probes=self.probes,
                        latent=self.latent, hidden=self.hidden, dropout=self.dropout)

    def fit(self, weights, y, *, activations=None, progress=False):
        weights, stats, archs, which = self._inputs(weights, activations)
        y = torch.as_tensor(np.asarray(y, dtype=np.float32))
        self.y_mean_, self.y_std_ = float(y.mean()), float(y.std().clamp_min(1e-8))
        target = (y - self.y_mean_) / self.y_std_
        with torch.random.fork_rng(devices=[]):  # init and dropout: seeded, the caller's RNG untouched
            torch.manual_seed(self.seed)
            net = self._new_net(stats.shape[1])
            net.stats_mean.copy_(stats.mean(0))
            net.stats_std.copy_(stats.std(0, correction=0).clamp_min(1e-8))
            self.net_ = _train_mse(net, lambda idx: net(weights[idx], stats[idx], archs, which[idx]), target, self,
                                   "probe predictor", progress)
        return self

    @torch.no_grad()
    def predict(self, weights, *, activations=None):
        if self.net_ is None:
            raise ConfigError("ProbePredictor: call fit() or load_predictor() before predict()")
        weights, stats, archs, which = self._inputs(weights, activations)
        out = [self.net_(weights[idx], stats[idx], archs, which[idx]) for idx in torch.arange(len(weights)).split(512)]
        return (torch.cat(out) * self.y_std_ + self.y_mean_).double().numpy()

    def _save_state(self, directory):
        save_checkpoint(directory / "net.safetensors", {k: v.contiguous() for k, v in self.net_.state_dict().items()},
                        {"predictor": self.kind})
        return {"net_file": "net.safetensors", "stats_dim": len(self.net_.stats_mean), "y_mean": self.y_mean_,
                "y_std": self.y_std_}

    def _load_state(self, directory, meta):
        state, _ = load_checkpoint(described_file(directory, meta, "net_file", "net.safetensors"))
        net = self._new_net(meta["stats_dim"])
        net.load_state_dict(state)
        self.net_, self.y_mean_, self.y_std_ = net.eval(), meta["y_mean"], meta["y_std"]


def make_predictor(name: str, space: WeightSpace, seed: int = 0, architecture: dict | None = None
                   ) -> AccuracyPredictor:
    """The predictors by the names the CLI and the benchmark use; ``probe`` needs the ``architecture``."""
    makers = {"gbt-statistics": lambda: GBTPredictor(space, features="statistics", seed=seed),
              "gbt": lambda: GBTPredictor(space, features="all", seed=seed),
              "gbt-spectral": lambda: GBTPredictor(space, features="spectral", seed=seed),
              "neuron-set": lambda: NeuronSetPredictor(space, seed=seed),
              "probe": lambda: ProbePredictor(space, architecture=architecture, seed=seed)}
    if name not in makers:
        raise ConfigError(f"predictor: expected one of {sorted(makers)}, got {name!r}")
    if name == "probe" and architecture is None:
        raise ConfigError("predictor 'probe' runs the models: it needs the architecture config (a zoo has one)")
    return makers[name]()


PREDICTOR_NAMES = ("gbt-statistics", "gbt", "gbt-spectral", "neuron-set", "probe")


def evaluate_predictors(
    weights: Tensor, table: pd.DataFrame, space: WeightSpace, *, names: Sequence[str] | None = None,
    target: str = "test_acc", test_fraction: float = 0.2, seed: int = 0, architecture: dict | None = None,
    progress: bool = False,
) -> tuple[pd.DataFrame, dict[str, AccuracyPredictor]]:
    """Fit each named predictor on the training runs, score it on the held-out runs.

    ``names`` defaults to every predictor (without ``probe`` when no ``architecture`` is given). Each
    model's activation comes from the index's ``hp_activation`` when it has one. Models with
    non-finite weights or target are left out (counted in ``dropped``). Returns one row per predictor
    (R², Kendall τ, RMSE, seconds to fit, sizes) and the fitted predictors.
    """
    import time

    if names is None:
        names = [n for n in PREDICTOR_NAMES if n != "probe" or architecture is not None]
    if target not in table:
        raise ConfigError(f"target {target!r} is not a column of the zoo index; columns: {list(table.columns)}")
    y = table[target].to_numpy(dtype=np.float64)
    keep = torch.isfinite(weights).all(1).numpy() & np.isfinite(y)
    weights, y, runs = weights[torch.from_numpy(keep)], y[keep], table["run_id"].to_numpy()[keep]
    acts = model_activations(table)
    acts = None if acts is None else np.array(acts, dtype=object)[keep]
    test = run_split(runs, test_fraction, seed)
    train_w, test_w = weights[torch.from_numpy(~test)], weights[torch.from_numpy(test)]
    train_a, test_a = (None, None) if acts is None else (list(acts[~test]), list(acts[test]))
    rows, fitted = [], {}
    for name in names:
        pred = make_predictor(name, space, seed, architecture)
        start = time.perf_counter()
        pred.fit(train_w, y[~test], activations=train_a, progress=progress)
        fit_s = time.perf_counter() - start
        rows.append({"predictor": name, **scores(y[test], pred.predict(test_w, activations=test_a)), "fit_s": fit_s,
                     "train_models": int((~test).sum()), "test_models": int(test.sum()),
                     "test_runs": len(np.unique(runs[test])), "dropped": int((~keep).sum()),
                     "target": target, "seed": seed})
        fitted[name] = pred
    return pd.DataFrame(rows), fitted
