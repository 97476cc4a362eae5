"""``weightspace zoo train|info|export``: build and inspect zoos."""

from __future__ import annotations

import time

from .common import add_backend_options, add_output, add_threads, backend_from, zoo_summary


def _zoo_train(args) -> None:
    from ..safe_input import claimed_output
    from ..zoo.build import build_zoo
    from ..zoo.config import read_config, resolve_config

    start = time.perf_counter()
    options = {"progress": not args.quiet, "append": args.append, "backend": backend_from(args)}
    config = args.config if args.threads is None else {**read_config(args.config), "threads": args.threads}
    if args.out is None:  # the config names the output: claim it here, as main() does for --out
        args.out = resolve_config(read_config(config))["out"]
        with claimed_output(args.out, args.output_command, force=args.force, what="out"):
            zoo = build_zoo(config, out=args.out, **options)
    else:
        zoo = build_zoo(config, out=args.out, **options)
    print(zoo_summary(zoo))
    print(f"\ndone in {time.perf_counter() - start:.1f} s")


def _zoo_info(args) -> None:
    from ..errors import ZooError
    from ..zoo import Zoo

    zoo = Zoo.open(args.dir)
    print(zoo_summary(zoo))
    if args.verify or args.clean:
        problems, leftovers = zoo.inspect()
        removed = zoo.clean() if args.clean else []
        print("", *(f"  {p}" for p in problems + [x for x in leftovers if not removed]), sep="\n")
        if removed:
            print(f"removed {len(removed)} unindexed files: {', '.join(removed[:10])}{' ...' if len(removed) > 10 else ''}")
        if problems:
            raise ZooError(f"zoo {zoo.root} has {len(problems)} bad entries (listed above); first: {problems[0]}")
        print(f"verified: {len(zoo)} checkpoints match their checksums and the layout")


def _zoo_export(args) -> None:
    from ..zoo import Zoo

    out = Zoo.open(args.dir, checksums=not args.no_verify).export(args.out, where=args.where, force=args.force)
    print(f"exported to {out}")


def register(sub) -> None:
    zoo = sub.add_parser("zoo", help="build and inspect zoos of trained models").add_subparsers(
        dest="zoo_command", required=True)
    train = zoo.add_parser("train", help="train the zoo a YAML config describes (resumes if interrupted)")
    train.add_argument("config", help="YAML config file, or the name of a shipped example (digits-mlp, ...)")
    add_output(train, "zoo train", help="zoo directory (default: the config's 'out', else runs/NAME)")
    train.add_argument("--append", action="store_true",
                       help="add runs of another config to an existing zoo, each checkpoint recording its config")
    add_threads(train, default=None, help="CPU threads for torch, BLAS and OpenMP (default: the config's "
                "'threads', else 1)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    add_backend_options(train)
    train.set_defaults(func=_zoo_train)
    info = zoo.add_parser("info", help="describe a zoo")
    info.add_argument("dir")
    info.add_argument("--verify", action="store_true",
                      help="check every file against its checksum and the layout; list orphans and leftovers")
    info.add_argument("--clean", action="store_true",
                      help="remove unindexed files left by interrupted writes (no writer may be running)")
    info.set_defaults(func=_zoo_info)
    export = zoo.add_parser("export", help="write weights.safetensors [N,P] + models.csv")
    export.add_argument("dir")
    add_output(export, "zoo export", positional=True, help="output directory")
    export.add_argument("--no-verify", action="store_true", help="skip checking each file's checksum as it is read")
    export.add_argument("--where", help="SQL filter over index columns, e.g. \"epoch = 20\"")
    export.set_defaults(func=_zoo_export)
