"""``weightspace study`` (the main job) and ``weightspace audit`` (bring your own generated models)."""

from __future__ import annotations

import time

from .common import (
    add_backend_options,
    add_key_option,
    add_output,
    add_threads,
    backend_from,
)


def parse_methods(text: str) -> list[str]:
    """``--methods a,b``: known names, at least one, none twice."""
    from ..errors import ConfigError
    from ..registry import method_names

    known = method_names()
    names = [m.strip() for m in text.split(",")]
    if not text.strip() or not all(names) or any(m not in known for m in names) or len(set(names)) < len(names):
        raise ConfigError(f"--methods: expected a comma-separated list of distinct names from {', '.join(known)}, "
                          f"got {text!r}")
    return names


def _study(args) -> None:
    """The main job: the memorization study of the four generators, end to end."""
    from ..study import run_study, verdict_lines

    start = time.perf_counter()
    if args.ablation:
        from ..errors import ConfigError
        from ..study import run_ablation_study

        if args.backend != "local":
            raise ConfigError("--backend ray: runs the study's methods as Ray tasks; --ablation runs here")
        path = run_ablation_study(args.out, method=args.ablation, preset=args.preset, seed=args.seed,
                                  progress=not args.quiet)
        print(f"report: {path}  ({time.perf_counter() - start:.0f} s)")
        return
    chosen = None if args.methods is None else parse_methods(args.methods)
    path = run_study(args.out, preset=args.preset, methods_=chosen, seed=args.seed, seeds=args.seeds,
                     workers=args.workers, progress=not args.quiet, backend=backend_from(args))
    print("\n".join(verdict_lines(args.out)))
    print(f"\nreport: {path}  ({time.perf_counter() - start:.0f} s)")


def _audit(args) -> None:
    from ..audit.external import audit_generated, verdict_lines

    path = audit_generated(args.train, args.generated, args.out, task=args.task, seed=args.seed,
                           backend=backend_from(args), key=args.key, where=args.where, held_out=args.held_out,
                           progress=not args.quiet)
    print("\n".join(verdict_lines(args.out)))
    print(f"\nreport: {path}")


def register(sub) -> None:
    study = sub.add_parser("study", help="the main job: do generators of weights memorise? (the paper's four and "
                           "weightspace's own; no downloads)")
    study.add_argument("--preset", default="quick", help="quick (default; about 40 min on 2 cores), paper, or tiny (a smoke run)")
    add_output(study, "study", default="runs/study", help="output directory (default runs/study)")
    study.add_argument("--methods", help="comma-separated subset of pdiff,hyperrep,gpt,hyperdiffusion,aligned")
    study.add_argument("--seed", type=int, default=0,
                       help="seeds everything: the data, the first generator fit, samples, baselines, bootstrap")
    study.add_argument("--seeds", type=int,
                       help="generator fits per method, seeds SEED, SEED+1, ... (default: 3; tiny preset 1)")
    study.add_argument("--workers", type=int, help="methods run at once, one process each (default: one per core)")
    study.add_argument("--ablation", metavar="METHOD", nargs="?", const="hyperrep",
                       help="instead: the ablation table of one method: hyperrep (default), pdiff or gpt")
    add_threads(study, help="CPU threads of a method run in this process (--workers 1, or one method); worker "
                "processes run one each (default 1)")
    study.add_argument("--quiet", action="store_true")
    add_backend_options(study)
    study.set_defaults(func=_study)

    audit = sub.add_parser("audit", help="audit your own generated checkpoints against a training zoo")
    audit.add_argument("--train", required=True, help="the training zoo")
    audit.add_argument("--generated", required=True,
                       help="a zoo, a folder of checkpoints, or a .npy of test predictions [models, examples]")
    audit.add_argument("--task", help="score on another data set with the same inputs (default: the zoo's)")
    add_key_option(audit, "each training checkpoint in the --generated folder")
    add_output(audit, "audit", default="runs/audit")
    audit.add_argument("--seed", type=int, default=0)
    audit.add_argument("--where", help="SQL condition on the zoo's index selecting the reference (default: the "
                       "method's training checkpoints, else the final checkpoint of every run)")
    audit.add_argument("--held-out", dest="held_out", metavar="WHERE",
                       help="SQL condition selecting runs trained like the others and never shown to the generator: "
                       "the control that new models beat noise (their final checkpoints unless --where is given)")
    audit.add_argument("--quiet", action="store_true")
    add_backend_options(audit)
    add_threads(audit)
    audit.set_defaults(func=_audit)
