"""``weightspace regions``: knowledge regions of a zoo of fine-tunes (clustering, embeddings,
in-region and centroid accuracy)."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from .common import add_output, add_threads


def _regions(args) -> None:
    from ..analysis.region_figures import save_region_figures
    from ..analysis.regions import EMBEDDINGS, KnowledgeRegions, build_regions
    from ..zoo import Zoo

    start = time.perf_counter()
    zoo = build_regions(args.build, args.zoo, progress=not args.quiet) if args.build else Zoo.open(args.zoo)
    methods = tuple(args.embeddings.split(",")) if args.embeddings else EMBEDDINGS
    res = KnowledgeRegions(by=args.by, embeddings=methods, interior_samples=args.samples, seed=args.seed).fit(zoo)
    out = Path(args.out)  # claimed for this command by weightspace.cli.main
    tables = {"metrics": res.metrics_, "embedding": res.embedding_, "interior": res.interior_,
              "starts": res.starts_, "start_curve": res.start_curve_, "separation": res.separation_}
    for name, df in tables.items():
        df.to_csv(out / f"{name}.csv", index=False)
    save_region_figures(res, out)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        for name in ("metrics", "separation", "interior", "starts"):
            if len(tables[name]):
                print(f"\n{name}:\n{tables[name].round(4).to_string(index=False)}")
    print(f"\ntables and figures → {out}  ({time.perf_counter() - start:.1f} s)")


def register(sub) -> None:
    r = sub.add_parser("regions", help="knowledge regions: clustering, embeddings, in-region and centroid accuracy")
    r.add_argument("zoo", help="a zoo of fine-tunes (built by --build, or any zoo with the --by column)")
    r.add_argument("--by", required=True, help="index column whose values are the regions (task, family, ...)")
    r.add_argument("--build", metavar="CONFIG", help="first build (or resume) the zoo from a regions config, "
                   "e.g. the shipped regions-fashion")
    r.add_argument("--embeddings", help="comma list of pca, tsne, umap (default: all)")
    r.add_argument("--samples", type=int, default=32, help="convex combinations per region (default 32)")
    r.add_argument("--seed", type=int, default=0)
    add_output(r, "regions", default="runs/regions", help="output directory (default runs/regions)")
    add_threads(r)
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=_regions)
