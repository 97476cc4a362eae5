"""``weightspace generate data|fit|sample``: generative models of weights and their baselines."""

from __future__ import annotations

import time
from pathlib import Path

from .common import add_output, add_threads, parse_sets, zoo_summary


def _generate_data(args) -> None:
    from ..registry import setting

    zoo = setting(args.method).build(args.out, preset=args.preset, progress=not args.quiet)
    print(zoo_summary(zoo))


def _generate_fit(args) -> None:
    import json

    from ..generator import make_generator
    from ..zoo import Zoo
    from ..zoo.setting import fit_inputs

    zoo = Zoo.open(args.zoo)
    weights, config, context = fit_inputs(zoo, args.method, where=args.where)
    gen = make_generator(args.method, **{**config, **parse_sets(args.set)})
    start = time.perf_counter()
    gen.fit(weights, progress=not args.quiet, **context)
    out = gen.save(args.out)
    (out / "fit.json").write_text(json.dumps({"zoo": str(Path(args.zoo).resolve()), "generator": args.method,
                                              "where": args.where,
                                              "config": gen.config(), "training_models": len(weights),
                                              "seconds": round(time.perf_counter() - start, 2)}, indent=2))
    print(f"fitted {args.method} on {len(weights)} checkpoints of {zoo.root} → {out}")


def _generate_sample(args) -> None:
    from ..generative.sampling import write_samples

    zoo = write_samples(args.dir, args.n, args.out, seed=args.seed, progress=not args.quiet)
    print(zoo_summary(zoo))


def register(sub) -> None:
    gen = sub.add_parser("generate", help="generative models of weights and their baselines").add_subparsers(
        dest="generate_command", required=True)
    data = gen.add_parser("data", help="build a method's training checkpoints as a zoo")
    data.add_argument("method", help="a study method: pdiff, hyperrep, gpt, hyperdiffusion, aligned, or one "
                      "registered with weightspace.register_method")
    add_output(data, "generate data", required=True)
    data.add_argument("--preset", default="default", help="default, or tiny for a seconds-long smoke run")
    add_threads(data)
    data.add_argument("--quiet", action="store_true")
    data.set_defaults(func=_generate_data)
    fit = gen.add_parser("fit", help="fit a generator (a method or a baseline) on a zoo")
    fit.add_argument("method", help="a registered generator: pdiff, hyperrep, gpt, hyperdiffusion, aligned, noise, "
                     "average, gaussian, aligned-interpolation")
    fit.add_argument("--zoo", required=True)
    fit.add_argument("--where", help="SQL condition on the zoo's index selecting the training checkpoints (default: "
                     "the method's selection, else every checkpoint)")
    add_output(fit, "generate fit", required=True)
    fit.add_argument("--set", action="append", metavar="KEY=VALUE", help="generator option, e.g. --set sigma=0.02")
    add_threads(fit)
    fit.add_argument("--quiet", action="store_true")
    fit.set_defaults(func=_generate_fit)
    sample = gen.add_parser("sample", help="draw models from a fitted generator into a new zoo")
    sample.add_argument("dir", help="a directory written by 'generate fit'")
    sample.add_argument("-n", type=int, default=200, help="number of samples (1 to 100000)")
    sample.add_argument("--seed", type=int, default=0)
    add_output(sample, "generate sample", required=True)
    add_threads(sample)
    sample.add_argument("--quiet", action="store_true")
    sample.set_defaults(func=_generate_sample)
