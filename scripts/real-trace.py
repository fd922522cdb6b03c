#!/usr/bin/env python3
"""Build benches/traces/litellm-year.json: a year of real catalog changes.

Source: LiteLLM's model-price catalog (`model_prices_and_context_window_backup.json`,
shipped inside every `litellm` wheel on PyPI), whose release history is public. Each
release is a look at ~150 providers' catalogs; a provider "changed" at a release when
any of its entries (models, prices, context windows) differs from the previous
release's. A release's instant is its upload time in the package index's JSON page
(the Simple API that pip reads, through pip's own session); only the main line is
kept: releases newer than every release uploaded before them (a backport to an old
branch would look like the catalog going back).

The 21 sample gateways take the change times of 21 real providers: the 14 that share
their name (openrouter, groq, together_ai, fireworks_ai, deepinfra, cerebras, xai,
featherless_ai, nebius, novita, vercel_ai_gateway, dashscope -> alibaba, fal_ai -> fal,
gemini -> google), and for the 7 with no namesake, providers drawn at random (seed 36)
from the rest, named in the output's "sources".

  pip download --no-deps --only-binary=:all: -d WHEELS litellm==X   (for each release)
  python3 scripts/real-trace.py WHEELS > benches/traces/litellm-year.json
"""
import glob
import hashlib
import json
import os
import random
import sys
import zipfile
from datetime import datetime

NAMESAKES = {
    "openrouter": "openrouter", "groq": "groq", "together": "together_ai",
    "fireworks": "fireworks_ai", "deepinfra": "deepinfra", "cerebras": "cerebras",
    "xai": "xai", "featherless": "featherless_ai", "nebius": "nebius",
    "novita": "novita", "vercel-ai-gateway": "vercel_ai_gateway",
    "alibaba": "dashscope", "fal": "fal_ai", "google": "gemini",
}
SAMPLE = ["aimo", "alibaba", "alpaca", "cerebras", "chutes", "clarifai", "deepinfra",
          "fal", "featherless", "fireworks", "google", "groq", "helicone", "huggingface",
          "near", "nebius", "novita", "openrouter", "together", "vercel-ai-gateway", "xai"]
CATALOG = "litellm/model_prices_and_context_window_backup.json"


def upload_times():
    """version -> first upload time (unix s), from the index pip uses."""
    from pip._internal.configuration import Configuration
    from pip._internal.network.session import PipSession
    config = Configuration(isolated=False)
    config.load()
    index = dict(config.items()).get("global.index-url", "https://pypi.org/simple")
    page = PipSession().get(index.rstrip("/") + "/litellm/", timeout=120,
                            headers={"Accept": "application/vnd.pypi.simple.v1+json"}).json()
    times = {}
    for f in page["files"]:
        version = f["filename"].split("-")[1].removesuffix(".tar.gz")
        at = datetime.fromisoformat(f["upload-time"].replace("Z", "+00:00")).timestamp()
        times[version] = min(at, times.get(version, at))
    return times


def version_key(v):
    return [int(x) for x in v.split(".")]


def releases(folder):
    times = upload_times()
    out = []
    for path in glob.glob(os.path.join(folder, "*.whl")):
        with zipfile.ZipFile(path) as z:
            try:
                info = z.getinfo(CATALOG)
            except KeyError:
                continue
            version = os.path.basename(path).split("-")[1]
            at = times[version]
            catalog = json.loads(z.read(CATALOG))
        by_provider = {}
        for model, entry in catalog.items():
            if isinstance(entry, dict) and isinstance(entry.get("litellm_provider"), str):
                by_provider.setdefault(entry["litellm_provider"], {})[model] = entry
        digests = {p: hashlib.sha256(json.dumps(m, sort_keys=True).encode()).hexdigest()
                   for p, m in by_provider.items()}
        out.append((at, version, digests))
    out.sort()
    main_line, newest = [], None
    for r in out:
        if newest is None or version_key(r[1]) > version_key(newest):
            main_line.append(r)
            newest = r[1]
    return main_line


def main():
    rel = releases(sys.argv[1])
    start = rel[0][0]
    changes = {}
    for (_, _, before), (at, _, after) in zip(rel, rel[1:]):
        for p in set(before) | set(after):
            if before.get(p) != after.get(p):
                changes.setdefault(p, []).append(round((at - start) / 3600, 3))
    providers = sorted(set().union(*(d for _, _, d in rel)))
    rest = sorted(p for p in providers if p not in NAMESAKES.values())
    rng = random.Random(36)
    unmatched = [g for g in SAMPLE if g not in NAMESAKES]
    drawn = rng.sample(rest, len(unmatched))
    sources = dict(NAMESAKES, **dict(zip(unmatched, drawn)))
    trace = {
        "days": round((rel[-1][0] - start) / 86400, 2),
        "source": "LiteLLM model_prices_and_context_window_backup.json, %d PyPI releases %s to %s"
        % (len(rel), rel[0][1], rel[-1][1]),
        "providers": len(providers),
        "sources": sources,
        "gateways": {g: changes.get(p, []) for g, p in sorted(sources.items()) if changes.get(p)},
    }
    json.dump(trace, sys.stdout, indent=1)
    print()
    counts = sorted(len(changes.get(p, [])) for p in providers)
    print(f"{len(rel)} releases over {trace['days']} days, {len(providers)} providers; "
          f"changes per provider: max {counts[-1]}, median {counts[len(counts)//2]}, "
          f"never {sum(1 for c in counts if c == 0)}", file=sys.stderr)


main()
