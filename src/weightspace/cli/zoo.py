"""``weightspace zoo train|info|export``: build and inspect zoos."""

from __future__ import annotations

import time

from .common import add_backend_options, backend_from, zoo_summary


def _zoo_train(args) -> None:
    from ..zoo.build import build_zoo

    start = time.perf_counter()
    zoo = build_zoo(args.config, out=args.out, progress=not args.quiet, backend=backend_from(args))
    print(zoo_summary(zoo))
    print(f"\ndone in {time.perf_counter() - start:.1f} s")


def _zoo_info(args) -> None:
    from ..zoo import Zoo

    zoo = Zoo.open(args.dir, verify=args.verify)
    print(zoo_summary(zoo))


def _zoo_export(args) -> None:
    from ..zoo import Zoo

    out = Zoo.open(args.dir).export(args.out, where=args.where)
    print(f"exported to {out}")


def register(sub) -> None:
    zoo = sub.add_parser("zoo", help="build and inspect zoos of trained models").add_subparsers(
        dest="zoo_command", required=True)
    train = zoo.add_parser("train", help="train the zoo a YAML config describes (resumes if interrupted)")
    train.add_argument("config", help="YAML config file, or the name of a shipped example (digits-mlp, ...)")
    train.add_argument("--out", help="zoo directory (default: the config's 'out', else runs/NAME)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    add_backend_options(train)
    train.set_defaults(func=_zoo_train)
    info = zoo.add_parser("info", help="describe a zoo")
    info.add_argument("dir")
    info.add_argument("--verify", action="store_true", help="check every file against its checksum")
    info.set_defaults(func=_zoo_info)
    export = zoo.add_parser("export", help="write weights.safetensors [N,P] + models.csv")
    export.add_argument("dir")
    export.add_argument("out")
    export.add_argument("--where", help="SQL filter over index columns, e.g. \"epoch = 20\"")
    export.set_defaults(func=_zoo_export)
