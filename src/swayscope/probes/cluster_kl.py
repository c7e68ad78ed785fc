"""``cluster_kl``: is the adapter's shift specific to some topics, or the same everywhere?

``delta_kl`` says how far the adapter moved the next-token distribution on average;
this probe asks whether it moved some groups of prompts more than others. The prompts
come in groups: the spec's ``groups`` (a name per group: the topics you choose, e.g.
the document's subjects and unrelated ones), or the spec's ``prompts`` clustered into
``num_clusters`` groups by k-means (seeded k-means++, ten starts, the tightest kept) over
their character-trigram TF-IDF vectors: a lexical clustering (dlm-sway clusters
sentence embeddings, which swayscope does not load), so prompts that share words and
word forms group together.

Per prompt, the base-vs-ft divergence (JS or KL, as ``delta_kl``: one batched call per
view, the same cache entries). The **specificity** is the share of the divergence's
variance that lies between the groups:

    specificity = between / (between + within)

with ``between`` the variance of the group means and ``within`` the mean of the
variances inside the groups (those of two or more prompts). 1: the adapter moved some
groups and not others; around 0.5 or below: every group moved alike.

**score**: the specificity.

**verdict**: ``skip`` when clustering is asked of fewer than ``min_prompts`` prompts or
of fewer than two per cluster; ``warn`` when every prompt moved exactly alike (no
variance: the specificity is undefined); ``pass`` when the specificity is at least
``assert_specificity_gte`` and, when a ``null_adapter`` calibrated the probe (on the
same groups), its z-score is at least ``min_z``; ``fail`` otherwise.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from swayscope.probes.base import (
    Probe,
    ProbeContext,
    ProbeResult,
    ProbeSpec,
    Verdict,
    ViewFactory,
)
from swayscope.probes.defaults import check_prompts
from swayscope.probes.divergence import (
    DivergenceKind,
    FloatArray,
    divergences,
    finite,
    view_dists,
)
from swayscope.probes.measures import null_evidence, z_against, z_words

#: k-means starts; the one with the least within-cluster distance is kept.
KMEANS_STARTS = 10
KMEANS_ITERATIONS = 100


def trigram_vectors(prompts: list[str]) -> FloatArray:
    """Unit-length TF-IDF vectors of each prompt's character trigrams (lower case, padded
    with a space at each end)."""
    grams = [Counter(t[i : i + 3] for i in range(len(t) - 2)) for t in
             (f" {p.lower()} " for p in prompts)]
    vocab = sorted(set().union(*grams))
    index = {g: j for j, g in enumerate(vocab)}
    df = Counter(g for c in grams for g in c)
    idf = np.asarray([math.log((1 + len(prompts)) / (1 + df[g])) + 1.0 for g in vocab])
    out = np.zeros((len(prompts), len(vocab)), dtype=np.float64)
    for i, c in enumerate(grams):
        for g, n in c.items():
            out[i, index[g]] = n
    out *= idf
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.asarray(out / np.where(norms > 0, norms, 1.0), dtype=np.float64)


def kmeans(points: FloatArray, k: int, seed: int) -> list[int]:
    """Cluster labels 0..k-1 of ``points``: k-means++ starts from a seeded generator, the
    start with the least total squared distance kept; labels numbered by first member."""
    rng = np.random.default_rng(seed)
    best: tuple[float, list[int]] | None = None
    for _ in range(KMEANS_STARTS):
        centres = [points[int(rng.integers(len(points)))]]
        while len(centres) < k:
            d2 = np.min([((points - c) ** 2).sum(axis=1) for c in centres], axis=0)
            total = float(d2.sum())
            pick = int(rng.choice(len(points), p=d2 / total)) if total > 0 else int(
                rng.integers(len(points))
            )
            centres.append(points[pick])
        c = np.asarray(centres)
        labels = np.full(len(points), -1, dtype=np.int64)
        for _ in range(KMEANS_ITERATIONS):
            d = ((points[:, None, :] - c[None, :, :]) ** 2).sum(axis=2)
            new = d.argmin(axis=1)
            if np.array_equal(new, labels):
                break
            labels = new
            c = np.asarray([
                points[labels == j].mean(axis=0) if np.any(labels == j) else c[j]
                for j in range(k)
            ])
        inertia = float(((points - c[labels]) ** 2).sum())
        if best is None or inertia < best[0] - 1e-12:
            best = (inertia, [int(x) for x in labels])
    assert best is not None
    order: dict[int, int] = {}
    return [order.setdefault(x, len(order)) for x in best[1]]


def specificity(values: FloatArray, labels: list[int]) -> tuple[float | None, float, float]:
    """(between / (between + within), between, within) of ``values`` grouped by
    ``labels``; the ratio is None when both variances are zero."""
    groups = [values[np.asarray(labels) == g] for g in sorted(set(labels))]
    means = np.asarray([g.mean() for g in groups])
    between = float(means.var()) if len(means) > 1 else 0.0
    spreads = [float(g.var()) for g in groups if g.size > 1]
    within = float(np.mean(spreads)) if spreads else 0.0
    total = between + within
    return (between / total if total > 0 else None), between, within


class ClusterKLSpec(ProbeSpec):
    """Spec of ``cluster_kl``: ``groups``, or ``prompts`` to cluster."""

    kind: Literal["cluster_kl"] = "cluster_kl"
    prompts: tuple[str, ...] = ()
    """Prompts to cluster into ``num_clusters`` groups (when no ``groups`` are given)."""
    groups: dict[str, tuple[str, ...]] | None = None
    """Prompts already grouped: group name → prompts (at least 2 groups)."""
    num_clusters: Annotated[int, Field(ge=2, le=32)] = 5
    divergence: DivergenceKind = "js"
    min_prompts: Annotated[int, Field(ge=4)] = 20
    """Clustering fewer prompts than this is skipped (too few for stable clusters)."""
    assert_specificity_gte: Annotated[float, Field(ge=0.0, le=1.0)] = 0.6
    min_z: Annotated[float, Field(allow_inf_nan=False)] | None = 3.0
    """When calibrated, also require the specificity's z-score to be at least this."""

    @model_validator(mode="after")
    def _input(self) -> ClusterKLSpec:
        if self.groups is not None:
            if self.prompts:
                raise ValueError("give groups or prompts, not both")
            if len(self.groups) < 2:
                raise ValueError(f"groups needs at least 2 groups; got {len(self.groups)}")
            for name, prompts in self.groups.items():
                check_prompts(prompts, f"groups.{name}")
        elif not self.prompts:
            raise ValueError(
                "cluster_kl needs prompts: list them under groups (name: [prompts]) or "
                "under prompts (clustered into num_clusters groups)"
            )
        else:
            check_prompts(self.prompts)
        return self

    def grouped(self) -> tuple[list[str], list[str] | None]:
        """Every prompt, and its group's name (None: to be clustered)."""
        if self.groups is None:
            return list(self.prompts), None
        pairs = [(p, name) for name, ps in self.groups.items() for p in ps]
        return [p for p, _ in pairs], [name for _, name in pairs]


class ClusterKLProbe(Probe):
    """How much of the per-prompt divergence lies between groups of prompts."""

    kind: ClassVar[str] = "cluster_kl"
    spec_class: ClassVar[type[ProbeSpec]] = ClusterKLSpec
    spec: ClusterKLSpec
    score_label: ClassVar[str] = "topic specificity"
    score_unit: ClassVar[str] = "variance ratio"

    def labels(self, ctx: ProbeContext) -> tuple[list[str], list[int], list[str]] | str:
        """(prompts, group of each, group names), or why the prompts cannot be grouped."""
        spec = self.spec
        prompts, names = spec.grouped()
        if names is not None:
            order = list(dict.fromkeys(names))
            return prompts, [order.index(n) for n in names], order
        if len(prompts) < spec.min_prompts:
            return (
                f"{len(prompts)} prompts are too few to cluster (min_prompts "
                f"{spec.min_prompts}); add prompts, or group them yourself under groups"
            )
        if 2 * spec.num_clusters > len(prompts):
            return (
                f"num_clusters {spec.num_clusters} needs at least {2 * spec.num_clusters} "
                f"prompts (two per cluster); got {len(prompts)}"
            )
        labels = kmeans(trigram_vectors(prompts), spec.num_clusters, ctx.defaults.seed)
        return prompts, labels, [f"cluster {j}" for j in range(max(labels) + 1)]

    def _divergences(self, ctx: ProbeContext, other: ViewFactory, prompts: list[str]) -> FloatArray:
        top_k = ctx.defaults.top_k
        base = view_dists(ctx.backend.base, prompts, top_k)
        return divergences(base, view_dists(other, prompts, top_k), self.spec.divergence)

    def statistic(self, ctx: ProbeContext, other: ViewFactory) -> float | None:
        """The specificity of base → ``other`` on the same groups."""
        grouped = self.labels(ctx)
        if isinstance(grouped, str):
            return None
        prompts, labels, _ = grouped
        return specificity(self._divergences(ctx, other, prompts), labels)[0]

    def run(self, ctx: ProbeContext) -> ProbeResult:
        spec = self.spec
        grouped = self.labels(ctx)
        if isinstance(grouped, str):
            return self.result("skip", message=grouped)
        prompts, labels, names = grouped
        divs = self._divergences(ctx, ctx.backend.ft, prompts)
        spec_ratio, between, within = specificity(divs, labels)
        lab = np.asarray(labels)
        means = np.asarray([divs[lab == j].mean() for j in range(len(names))])
        per_group = [
            {
                "group": name,
                "size": int((lab == j).sum()),
                "mean_divergence": float(means[j]),
                "prompt_hashes": [
                    ctx.backend.inst.hash_prompt(p) for p, g in zip(prompts, labels, strict=True)
                    if g == j
                ],
            }
            for j, name in enumerate(names)
        ]
        cal = ctx.calibration.get(spec.label)
        evidence: dict[str, object] = {
            "divergence": spec.divergence,
            "unit": "nats",
            "grouping": "groups" if spec.groups is not None else "k-means on character trigrams",
            "num_groups": len(names),
            "num_prompts": len(prompts),
            "mean_divergence": float(divs.mean()),
            "between_group_variance": between,
            "within_group_variance": within,
            "per_group": per_group,
            "per_prompt": [float(d) for d in divs],
            "assert_specificity_gte": spec.assert_specificity_gte,
            "top_k": ctx.defaults.top_k,
            "min_z": spec.min_z,
            **null_evidence(cal),
        }
        if spec_ratio is None:
            return self.result(
                "warn",
                message=(
                    f"every prompt moved alike (mean divergence {float(divs.mean()):.4g} nats, "
                    "no variance): specificity is undefined"
                ),
                evidence=evidence,
            )
        z = z_against(cal, spec_ratio)
        high = spec_ratio >= spec.assert_specificity_gte
        z_ok = spec.min_z is None or z is None or z >= spec.min_z
        verdict: Verdict = "pass" if high and z_ok else "fail"
        top, low = int(np.argmax(means)), int(np.argmin(means))
        parts = [
            f"specificity {spec_ratio:.2f} over {len(names)} groups ({'≥' if high else '<'} "
            f"{spec.assert_specificity_gte:g})",
            f"most moved: {names[top]!r} ({means[top]:.4g} nats), "
            f"least: {names[low]!r} ({means[low]:.4g})",
        ]
        said = z_words(z, cal, spec.min_z)
        if said:
            parts.append(said)
        evidence["specificity"] = spec_ratio
        return self.result(
            verdict, score=spec_ratio, z_score=finite(z), message="; ".join(parts),
            evidence=evidence,
        )


__all__ = [
    "ClusterKLProbe",
    "ClusterKLSpec",
    "kmeans",
    "specificity",
    "trigram_vectors",
]
