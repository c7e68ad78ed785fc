"""How each field of a dlm-sway 0.1.0 suite is read: the swayscope field it becomes, why it
is ignored, or the one value it is accepted at; per probe kind, for the defaults, and the
kinds swayscope has no probe for (a kind of that name added to swayscope's probes runs
with its fields as written, unless a rule here says otherwise)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: dlm-sway's spec version (its top-level ``version:``).
SWAY_SPEC_VERSION = 1
ABSENT: Any = object()

#: swayscope's ``prompt_collapse`` field that dlm-sway's ``context_lengths`` becomes.
COLLAPSE_LENGTHS_FIELD = "context_tokens"


@dataclass(frozen=True, slots=True)
class Maps:
    """The field becomes swayscope field ``to``; ``default`` (dlm-sway's) is written out
    when the field is absent and swayscope's own default differs."""

    to: str
    default: Any = ABSENT


@dataclass(frozen=True, slots=True)
class Ignored:
    """The field only steers something swayscope does not have; any value is accepted."""

    why: str


@dataclass(frozen=True, slots=True)
class OnlyDefault:
    """No swayscope counterpart: accepted at dlm-sway's default ``value`` only."""

    value: Any
    differs: str
    """What swayscope does instead."""
    nearest: str
    """The nearest swayscope setting, or what to do."""


Rule = Maps | Ignored | OnlyDefault

TOP_K = "top_k"
WEIGHT = Ignored("it weights dlm-sway's composite score, which swayscope does not compute")
PROMPTS = Maps("prompts")
DIVERGENCE = Maps("divergence")


@dataclass(frozen=True, slots=True)
class KindRules:
    """How one dlm-sway probe kind is read."""

    to: str
    """The swayscope probe kind it runs as."""
    fields: dict[str, Rule]
    note: str = ""
    """Said for every entry of this kind (how the swayscope probe differs)."""


KINDS: dict[str, KindRules] = {
    "null_adapter": KindRules(
        "null_adapter",
        {
            "runs": Maps("n", default=3),
            "seed_base": Maps("seed", default=1000),
            "init_scale": OnlyDefault(
                0.02,
                "dlm-sway fills null adapters with noise of this absolute std; swayscope "
                "sizes them relative to the real adapter",
                "init_scale in a swayscope spec (1.0 = the real adapter's size)",
            ),
            "calibrate_kinds": OnlyDefault(
                [],
                "swayscope calibrates every later probe that has a calibratable statistic, "
                "each with its own prompts",
                "remove calibrate_kinds; probes before null_adapter are not calibrated",
            ),
            "cache": Ignored("swayscope calibrates afresh on every run (no on-disk cache)"),
            "rank_multipliers": OnlyDefault(
                [1.0],
                "swayscope calibrates at one null-adapter rank",
                "rank_scale in a swayscope spec (null-adapter rank relative to the real one)",
            ),
        },
    ),
    "delta_kl": KindRules(
        "delta_kl",
        {
            "prompts": PROMPTS,
            "divergence": DIVERGENCE,
            "top_k": Maps(TOP_K),
            "assert_mean_gte": Maps("threshold", default=0.02),
            "assert_z_gte": Maps("min_z", default=3.0),
        },
    ),
    "adapter_ablation": KindRules(
        "adapter_ablation",
        {
            "prompts": PROMPTS,
            "lambdas": Maps("lambdas"),
            "divergence": DIVERGENCE,
            "top_k": Maps(TOP_K),
            **{
                name: OnlyDefault(
                    value,
                    "dlm-sway passes the λ curve on R², a saturation band and overshoot; "
                    "swayscope's adapter_ablation fails only when λ = 1 does nothing and "
                    "warns when the curve is not monotone",
                    "threshold, monotone_tolerance or saturation_fraction in a swayscope spec",
                )
                for name, value in (
                    ("assert_linearity_gte", 0.85),
                    ("assert_saturation_between", [0.3, 1.05]),
                    ("assert_overshoot_gte", 1.02),
                    ("assert_z_gte", 3.0),
                )
            },
        },
    ),
    "prompt_collapse": KindRules(
        "prompt_collapse",
        {
            "prompts": PROMPTS,
            "context_lengths": Maps(COLLAPSE_LENGTHS_FIELD, default=[0, 256, 512, 1024]),
            "divergence": DIVERGENCE,
            "top_k": Maps(TOP_K),
            "assert_half_life_tokens": Maps("min_half_life", default=512),
            "assert_z_gte": Ignored("dlm-sway 0.1.0 never calibrates prompt_collapse"),
            "legacy_stuffing": OnlyDefault(
                False,
                "swayscope prepends its own neutral passage",
                "context_text in a swayscope spec (the text to prepend)",
            ),
        },
        note=(
            f"context_lengths become {COLLAPSE_LENGTHS_FIELD} (both count tokens: dlm-sway "
            "prepends tokenizer padding, swayscope that many tokens of a neutral passage); "
            "a short half-life warns rather than fails"
        ),
    ),
    "external_perplexity": KindRules(
        "perplexity_shift",
        {
            "corpus": OnlyDefault(
                "public_domain_en",
                "swayscope scores one packaged public-domain passage",
                "text in a swayscope spec (the text to score)",
            ),
            "chunk_chars": Maps("min_chunk_chars"),
            "max_chunks": Maps("max_chunks"),
            "assert_mean_delta_gte": OnlyDefault(
                -0.1,
                "dlm-sway fails when the fine-tune finds prose much less likely; swayscope's "
                "perplexity_shift passes when |shift| ≥ threshold and warns otherwise",
                "threshold (minimum |shift|, nats per token) in a swayscope spec",
            ),
            "assert_z_gte": OnlyDefault(
                3.0,
                "swayscope's z-score is of |shift| and is required only when min_z is set",
                "min_z in a swayscope spec",
            ),
        },
        note=(
            "runs as perplexity_shift: the same per-token logprob shift, on swayscope's "
            "packaged passage; it passes when |shift| ≥ 0.01 nats/token and warns otherwise "
            "(dlm-sway fails when the shift < -0.1)"
        ),
    ),
}

#: dlm-sway's ``assert_z_gte`` where swayscope requires the z-score only when asked.
Z_WHEN_GIVEN = Maps("min_z")
#: ... and where swayscope requires it by default, at dlm-sway's default.
Z_REQUIRED = Maps("min_z", default=3.0)
EMBEDDER = Ignored(
    "swayscope loads no sentence embedder: it compares texts by their words"
)

KINDS.update({
    "calibration_drift": KindRules(
        "calibration_drift",
        {
            "pack": Maps("pack"),
            "items": Maps("items"),
            "items_limit": Maps("items_limit"),
            "regression_nats": Maps("regression_nats"),
            "assert_fraction_regressed_lt": Maps("assert_fraction_regressed_lt"),
            "assert_mean_delta_gte": Maps("assert_mean_delta_gte"),
            "assert_z_gte": Z_WHEN_GIVEN,
        },
        note=(
            "swayscope's own 176 general-knowledge items (dlm-sway's pack is not shipped "
            "with swayscope); calibrated on the mean drift, the z-score required only when "
            "assert_z_gte is given"
        ),
    ),
    "section_internalization": KindRules(
        "section_internalization",
        {
            "include_kinds": Maps("include_kinds"),
            "per_section_threshold": Maps("per_section_threshold"),
            "assert_passing_section_frac": Maps("assert_passing_section_frac"),
            "max_prose_chars": Maps("max_prose_chars"),
            "assert_z_gte": Z_REQUIRED,
        },
        note=(
            "reads the sections of dlm_source itself (no dlm package needed); calibrated on "
            "the mean lift (dlm-sway's mean effective lift is zero by construction)"
        ),
    ),
    "leakage": KindRules(
        "leakage",
        {
            "prefix_chars": Maps("prefix_chars"),
            "continuation_chars": Maps("continuation_chars"),
            "max_new_tokens": Maps("max_new_tokens"),
            "perturbations": Maps("perturbations"),
            "assert_recall_lt": Maps("assert_recall_lt"),
            "min_fragility": Maps("min_fragility"),
            "assert_z_gte": Z_WHEN_GIVEN,
        },
        note=(
            "recall is ROUGE-L recall (longest common word subsequence over the target's "
            "words; dlm-sway: difflib's similarity ratio); the z-score is required only when "
            "assert_z_gte is given"
        ),
    ),
    "paraphrase_invariance": KindRules(
        "paraphrase_invariance",
        {
            "cases": Maps("cases"),
            "intent": Maps("intent"),
            "min_verbatim_lift": Maps("min_verbatim_lift"),
            "min_generalization_ratio": Maps("min_generalization_ratio"),
            "max_generalization_ratio_if_memorize": Maps(
                "max_generalization_ratio_if_memorize"
            ),
            "assert_z_gte": Z_REQUIRED,
        },
        note="calibrated, the ratio test still applies (dlm-sway then judges by z alone)",
    ),
    "preference_flip": KindRules(
        "preference_flip",
        {
            "triples": Maps("triples"),
            "assert_flip_rate_gte": Maps("assert_flip_rate_gte"),
            "min_triples_for_decision": Maps("min_triples_for_decision"),
            "assert_z_gte": Z_REQUIRED,
        },
    ),
    "style_fingerprint": KindRules(
        "style_fingerprint",
        {
            "prompts": PROMPTS,
            "doc_reference": Maps("doc_reference"),
            "max_new_tokens": Maps("max_new_tokens"),
            "assert_shift_gte": Maps("assert_shift_gte"),
            "assert_z_gte": Z_REQUIRED,
            "extended": Ignored(
                "swayscope's fingerprint is its own seven features (no spaCy extension)"
            ),
        },
        note="swayscope's fingerprint has seven features of its own (dlm-sway: six, or nine)",
    ),
    "adapter_revert": KindRules(
        "adapter_revert",
        {
            "cases": Maps("cases"),
            "max_new_tokens": Maps("max_new_tokens"),
            "embedding_model": EMBEDDER,
            "base_gold_similarity_cap": Maps("base_gold_similarity_cap"),
            "assert_revert_rate_lt": Maps("assert_revert_rate_lt"),
            "assert_z_gte": Ignored("adapter_revert is not calibrated (nor in dlm-sway)"),
        },
        note=(
            "answers are compared by word n-gram cosine, not sentence embeddings (dlm-sway "
            "skips this probe without its semsim extra)"
        ),
    ),
    "cluster_kl": KindRules(
        "cluster_kl",
        {
            "prompts": PROMPTS,
            "num_clusters": Maps("num_clusters"),
            "embedding_model": EMBEDDER,
            "divergence": DIVERGENCE,
            "top_k": Maps(TOP_K),
            "min_prompts": Maps("min_prompts"),
            "assert_specificity_gte": Maps("assert_specificity_gte"),
            "assert_z_gte": Z_REQUIRED,
        },
        note=(
            "prompts are clustered by k-means on character trigrams, not sentence embeddings "
            "(dlm-sway skips this probe without its semsim extra); groups in a swayscope "
            "spec name the clusters yourself"
        ),
    ),
})

#: dlm-sway kinds swayscope has no probe for → the nearest thing swayscope offers (every
#: kind of dlm-sway 0.1.0 has one; a kind from a dlm-sway plugin has none).
NEAREST_KIND: dict[str, str] = {}

COMMON_FIELDS = ("name", "kind", "enabled", "weight")
MODEL_KEYS = (
    "kind", "base", "adapter", "dtype", "device", "trust_remote_code", "entry_point", "endpoint",
)
DTYPES = {"auto": "auto", "fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
DEFAULT_RULES: dict[str, Rule] = {
    "seed": Maps("seed"),
    "top_k": Maps("top_k"),
    "differential": OnlyDefault(
        True,
        "swayscope compares one loaded model with its adapter on and off",
        "differential: true",
    ),
    "coverage_threshold": Ignored("it gates dlm-sway's composite score (sway gate)"),
    "concurrent_probes": Ignored("it has no effect in dlm-sway 0.1.0"),
    "score_weights": WEIGHT,
}
TOP_LEVEL = ("version", "models", "defaults", "suite", "dlm_source")
#: Every probe kind of dlm-sway 0.1.0.
SWAY_KINDS = (*KINDS, *NEAREST_KIND)


__all__ = [
    "ABSENT",
    "COLLAPSE_LENGTHS_FIELD",
    "COMMON_FIELDS",
    "DEFAULT_RULES",
    "DTYPES",
    "Ignored",
    "KINDS",
    "KindRules",
    "MODEL_KEYS",
    "Maps",
    "NEAREST_KIND",
    "OnlyDefault",
    "Rule",
    "SWAY_KINDS",
    "SWAY_SPEC_VERSION",
    "TOP_K",
    "TOP_LEVEL",
    "WEIGHT",
]
