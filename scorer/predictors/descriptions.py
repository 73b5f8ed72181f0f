"""The descriptions predictor: route from a few words per model, before any training data exists.

Each model may declare what it is good at (`description`), queries it should get (`examples`) and
queries it should not (`avoid`). A query is scored against them with the gate's encoder, as
semantic-router scores example utterances and Arch-Router plain-language route descriptions:

1. `match[m]` = the highest cosine similarity between the query and model m's description or examples,
   less the highest similarity to its `avoid` queries where that is positive (0 without any).
2. `fit[m] = exp((match[m] - max(max_j match[j], in_domain)) / temperature)`: the model's softmax
   probability relative to the best-matching model's, so the best match gets 1 and a model `temperature`
   of cosine behind gets 1/e, unless even the best match is below `in_domain` (a cosine that counts as
   "this is the kind of query the model declared"): then every fit is below 1, measured from that bar.
   So a query unlike anything declared gets low scores, and a model described alone (one added to a
   trained pool) is not sure of every query. The fit does not depend on which subset of the pool is
   asked for, nor on the pool's size.
3. `score[m] = quality[m] * (off_domain + (1 - off_domain) * fit[m])`: the declared quality (the prior
   probability of a good answer) for a query like those the model declared, down to `off_domain` of it
   for a query unlike them. The quality breaks near ties, and a query that matches no model well falls
   back to the best declared model.

With **domains** (a descriptions file's `domains:`, e.g. one per public benchmark), each model may also
state its quality per domain (`scores:`, e.g. the figure its public card reports on that benchmark): the
query's domain is then read from its similarity to each domain's description and examples,
`p[d] = softmax_d(best cosine to domain d / temperature)`, and the declared quality of step 3 becomes
`sum_d p[d] * scores[m][d]` (a domain the model states nothing about counts at its `quality`). Only the
domain's texts decide which figures apply, so a query is routed on what the cards report for queries of
its kind, not on which card it resembles; `off_domain` then defaults to 1, so the models' own texts do
not enter the score (an `off_domain` below 1 weighs them in as in step 3).

A product of numbers in [0, 1], so every score is in [0, 1] and finite, on the scale of the declared
priors (what `gate.scorer: priors` gives), and the selector, the budget, `min_confidence` and the
constraints read it as they read any scorer's. Nothing is trained; the texts are embedded once, when the
predictor first scores a query.

`BlendedScorer` mixes a trained checkpoint with the descriptions (`gate.describe_weight`), and scores a
model the checkpoint was never trained on from its description alone, brought onto the checkpoint's
scale: for each query, the descriptions scores are multiplied by the checkpoint's mean score of the
models it knows over their mean declared quality (a query the checkpoint finds hard is hard for the
newcomer too; a newcomer declared as good as the known models gets their level where it fits).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from moai.mix_instructions.schema import MAX_DESCRIPTION_LENGTH, MAX_EXAMPLES, MAX_MODELS
from moai.scorer.encoders import STATIC_ENCODER, TextEncoder
from moai.scorer.predictors.base import F32Array, FloatArray, ScorePredictor, as_embeddings

__all__ = [
    "IN_DOMAIN",
    "OFF_DOMAIN",
    "TEMPERATURE",
    "BlendedScorer",
    "Description",
    "DescriptionScorer",
    "Domain",
    "read_descriptions",
    "read_domains",
]

TEMPERATURE = 0.05
"""Cosine similarity that divides the matches: a model this far behind the best match keeps 1/e of its fit."""
OFF_DOMAIN = 0.3
"""Share of its declared quality a model keeps for a query unlike anything it declared."""
IN_DOMAIN = 0.4
"""Cosine similarity to a model's description or examples from which a query counts as one it should get
(chosen a priori for MiniLM-like encoders: paraphrases score 0.6-0.9, unrelated texts below 0.2)."""


@dataclass(frozen=True)
class Description:
    """What one model declares about itself.

    Attributes:
        text: What it is good at, in words.
        examples: Queries it should get.
        avoid: Queries it should not get.
        quality: Prior probability of a good answer, in [0, 1].
        scores: Prior probability of a good answer per domain, in [0, 1].
    """

    text: str = ""
    examples: tuple[str, ...] = ()
    avoid: tuple[str, ...] = ()
    quality: float = 0.5
    scores: Mapping[str, float] = field(default_factory=dict)
    """Quality per domain (see `Domain`), in [0, 1]; a domain not named here counts at `quality`."""

    @property
    def positives(self) -> tuple[str, ...]:
        """The texts a query should resemble: the description (if any) and the examples."""
        return ((self.text,) if self.text.strip() else ()) + tuple(self.examples)


@dataclass(frozen=True)
class Domain:
    """A kind of query (e.g. a public benchmark's), on which models state their quality.

    Attributes:
        text: What its queries are, in words.
        examples: Queries of its kind.
    """

    text: str = ""
    examples: tuple[str, ...] = ()

    @property
    def texts(self) -> tuple[str, ...]:
        """The texts a query of this domain resembles: the description (if any) and the examples."""
        return ((self.text,) if self.text.strip() else ()) + tuple(self.examples)


_Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_DESCRIPTION_LENGTH)]
_Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
MAX_DOMAINS = 64
"""Most domains a descriptions file may declare."""


class _Declared(BaseModel):
    # The fields a mix's model declares for the descriptions gate, with the same bounds.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    description: str = Field("", max_length=MAX_DESCRIPTION_LENGTH)
    examples: list[_Text] = Field(default_factory=list, max_length=MAX_EXAMPLES)
    avoid: list[_Text] = Field(default_factory=list, max_length=MAX_EXAMPLES)
    quality: float = Field(0.5, ge=0, le=1)
    scores: dict[_Name, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict, max_length=MAX_DOMAINS)


class _DomainDeclared(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = Field("", max_length=MAX_DESCRIPTION_LENGTH)
    examples: list[_Text] = Field(default_factory=list, max_length=MAX_EXAMPLES)


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: dict[_Name, _Declared] = Field(max_length=MAX_MODELS)
    domains: dict[_Name, _DomainDeclared] = Field(default_factory=dict, max_length=MAX_DOMAINS)

    @model_validator(mode="after")
    def _known_domains(self) -> _File:
        for name, model in self.models.items():
            if unknown := sorted(set(model.scores) - set(self.domains)):
                raise ValueError(
                    f"models.{name}.scores names no declared domain: {', '.join(unknown)} "
                    f"(domains: {', '.join(self.domains) or 'none'})"
                )
        return self


def _read(path: str | os.PathLike[str]) -> _File:
    file = Path(path)
    if not file.is_file() or file.stat().st_size > 1_000_000:
        raise ValueError(f"{file}: not a descriptions file of at most 1 MB")
    try:
        return _File.model_validate(yaml.safe_load(file.read_text(encoding="utf-8")))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f"{file}: not YAML: {err}") from None
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{file}: {where}: {first['msg']}".replace(": : ", ": ")) from None


def read_descriptions(path: str | os.PathLike[str]) -> dict[str, Description]:
    """Read a descriptions file's models: `models: {name: {description, examples, avoid, quality, scores}}`.

    The file (YAML or JSON) may also declare `domains: {name: {description, examples}}`, which each model's
    `scores` name (see `read_domains`).

    Raises:
        ValueError: The file is missing, too large, or not of that shape (the message names the field).
    """
    return {
        name: Description(d.description, tuple(d.examples), tuple(d.avoid), d.quality, dict(d.scores))
        for name, d in _read(path).models.items()
    }


def read_domains(path: str | os.PathLike[str]) -> dict[str, Domain]:
    """Read a descriptions file's domains: `domains: {name: {description, examples}}` (empty without any).

    Raises:
        ValueError: As `read_descriptions`.
    """
    return {name: Domain(d.description, tuple(d.examples)) for name, d in _read(path).domains.items()}


class DescriptionScorer(ScorePredictor):
    """Score each model by the query's similarity to its description and examples, less its avoid list."""

    method = "descriptions"
    trainable = False

    def __init__(
        self,
        descriptions: Mapping[str, Description] | None = None,
        *,
        temperature: float = TEMPERATURE,
        off_domain: float | None = None,
        in_domain: float = IN_DOMAIN,
        encoder: TextEncoder | None = None,
        encoder_name: str | None = None,
        domains: Mapping[str, Domain] | None = None,
    ) -> None:
        """Build the predictor (the texts are embedded when it first scores a query).

        Args:
            descriptions: Each model's declaration, by name; the column order of predictions.
            temperature: See `TEMPERATURE` (> 0); also divides the similarities to the domains.
            off_domain: See `OFF_DOMAIN` (in [0, 1]); default `OFF_DOMAIN`, or 1 with `domains`.
            in_domain: See `IN_DOMAIN` (in [-1, 1]).
            encoder: The query encoder (default: built from `encoder_name`).
            encoder_name: Name of the encoder (default: the static encoder, `static-minilm`).
            domains: The kinds of query the models' `scores` name (see the module's docstring).

        Raises:
            ValueError: A setting is out of range, or a model's scores name a domain not given.
        """
        if encoder is None and encoder_name is None:
            encoder_name = STATIC_ENCODER
        super().__init__(encoder=encoder, encoder_name=encoder_name)
        self.domains = dict(domains or {})
        if off_domain is None:
            off_domain = 1.0 if self.domains else OFF_DOMAIN
        if not (np.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        if not 0 <= off_domain <= 1:
            raise ValueError(f"off_domain must lie in [0, 1], got {off_domain!r}")
        if not -1 <= in_domain <= 1:
            raise ValueError(f"in_domain must lie in [-1, 1], got {in_domain!r}")
        self.in_domain = float(in_domain)
        self.temperature = float(temperature)
        self.off_domain = float(off_domain)
        self.descriptions = dict(descriptions or {})
        for name, d in self.descriptions.items():
            if not all(0 <= q <= 1 for q in (d.quality, *d.scores.values())):
                raise ValueError(f"quality and scores of {name!r} must lie in [0, 1]")
            if unknown := sorted(set(d.scores) - set(self.domains)):
                raise ValueError(f"scores of {name!r} name unknown domains: {', '.join(unknown)}")
        self.models = tuple(self.descriptions)
        self._texts: F32Array | None = None  # [texts, dim], every model's positives, then every avoid
        self._domain_texts: F32Array | None = None  # [texts, dim], every domain's texts

    @property
    def encoder(self) -> TextEncoder:
        """The query encoder, which also embeds the declared texts."""
        return super().encoder

    @encoder.setter
    def encoder(self, value: TextEncoder) -> None:
        self._encoder, self.encoder_name = value, value.name
        self._texts = self._domain_texts = None  # embedded again with the new encoder

    def _fit(self, emb: F32Array, s: FloatArray, *, tasks: Sequence[str] | None, progress: bool) -> None:
        # Zero-shot: nothing is learnt from the rows. `fit` only fixes the column order (the benchmark's
        # models), each of which must be described.
        if missing := [m for m in self.models if m not in self.descriptions]:
            raise ValueError(f"no description for {', '.join(missing)}")
        self._texts = self._domain_texts = None  # the texts are embedded again, in the new column order

    def _embedded(self) -> F32Array:
        if self._texts is None:
            texts = [t for m in self.models for t in self.descriptions[m].positives]
            texts += [t for m in self.models for t in self.descriptions[m].avoid]
            self._texts = as_embeddings(self.encoder.encode(texts)) if texts else np.zeros((0, 1), np.float32)
            # One owner per text, grouped by model, so a segment maximum (reduceat) gives each model's best.
            self._pos_owner = np.array([i for i, m in enumerate(self.models) for _ in self.descriptions[m].positives])
            self._neg_owner = np.array([i for i, m in enumerate(self.models) for _ in self.descriptions[m].avoid])
            self._quality = np.array([self.descriptions[m].quality for m in self.models], dtype=np.float64)
        return self._texts

    def _embedded_domains(self) -> F32Array:
        if self._domain_texts is None:
            names = list(self.domains)
            texts = [t for d in names for t in self.domains[d].texts]
            self._domain_texts = as_embeddings(self.encoder.encode(texts)) if texts else np.zeros((0, 1), np.float32)
            self._domain_owner = np.array([i for i, d in enumerate(names) for _ in self.domains[d].texts])
            # [domains, models]: each model's stated quality on each domain, its `quality` where it states none.
            self._domain_quality = np.array(
                [
                    [self.descriptions[m].scores.get(d, self.descriptions[m].quality) for m in self.models]
                    for d in names
                ],
                dtype=np.float64,
            ).reshape(len(names), len(self.models))
        return self._domain_texts

    def domain_probabilities(self, embeddings: npt.ArrayLike) -> FloatArray:
        """Return [queries, domains]: how likely each query is of each domain (rows sum to 1; [q, 0] without any)."""
        emb = as_embeddings(embeddings)
        texts = self._embedded_domains()
        if not self.domains or texts.shape[0] == 0:
            return np.zeros((emb.shape[0], len(self.domains)))
        sim = (emb @ texts.T).astype(np.float64)
        best = self._best(sim, self._domain_owner, len(self.domains))
        # A domain without texts never matches: -inf keeps it out of the softmax.
        has_texts = np.isin(np.arange(len(self.domains)), self._domain_owner)
        logits = np.where(has_texts, best / self.temperature, -np.inf)
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        probs: FloatArray = weights / weights.sum(axis=1, keepdims=True)
        return np.nan_to_num(probs, nan=0.0)

    def declared_quality(self, embeddings: npt.ArrayLike) -> FloatArray:
        """Return [queries, models]: each model's declared quality for the query's (likely) domain."""
        emb = as_embeddings(embeddings)
        self._embedded()
        if not self.domains:
            return np.broadcast_to(self._quality, (emb.shape[0], len(self.models))).copy()
        probs = self.domain_probabilities(emb)
        out: FloatArray = probs @ self._domain_quality
        # A query no domain's texts cover (a pool whose domains are all empty) keeps the flat quality.
        out[probs.sum(axis=1) == 0] = self._quality
        return out

    @staticmethod
    def _best(sim: FloatArray, owner: np.ndarray, n_models: int) -> FloatArray:
        """Return [queries, models]: each model's highest similarity among its texts (0 where it has none)."""
        out = np.zeros((sim.shape[0], n_models))
        if owner.size:
            starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
            out[:, owner[starts]] = np.maximum.reduceat(sim, starts, axis=1)
        return out

    def match(self, embeddings: npt.ArrayLike) -> FloatArray:
        """Return [queries, models]: the best similarity to a model's positives, less its avoid penalty."""
        emb = as_embeddings(embeddings)
        texts = self._embedded()
        n_models, n_pos = len(self.models), self._pos_owner.size
        if texts.shape[0] == 0:
            return np.zeros((emb.shape[0], n_models))
        sim = (emb @ texts.T).astype(np.float64)
        positive = self._best(sim[:, :n_pos], self._pos_owner, n_models)
        avoid = self._best(sim[:, n_pos:], self._neg_owner, n_models)
        return positive - np.maximum(avoid, 0.0)

    def predict_embeddings(self, embeddings: npt.ArrayLike, *, tasks: Sequence[str] | None = None) -> FloatArray:
        """Return calibrated scores [queries, len(self.models)] in [0, 1] (see the module's docstring)."""
        match = self.match(embeddings)
        if not self.models:
            return match
        bar = np.maximum(match.max(axis=1, keepdims=True), self.in_domain)
        fit = np.exp((match - bar) / self.temperature)
        quality = self.declared_quality(embeddings) if self.domains else self._quality
        scores: FloatArray = quality * (self.off_domain + (1.0 - self.off_domain) * fit)
        return np.clip(np.nan_to_num(scores, nan=0.0), 0.0, 1.0, out=scores)

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Return (no arrays, the descriptions and settings)."""
        config = {
            "descriptions": {m: asdict(d) for m, d in self.descriptions.items()},
            "temperature": self.temperature,
            "off_domain": self.off_domain,
            "in_domain": self.in_domain,
            "encoder": self.encoder_name,
            "domains": {d: asdict(v) for d, v in self.domains.items()},
        }
        return {}, config

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], config: dict[str, Any]) -> DescriptionScorer:
        """Rebuild the predictor from `state`."""
        descriptions = {
            m: Description(
                d["text"], tuple(d["examples"]), tuple(d["avoid"]), float(d["quality"]), dict(d.get("scores", {}))
            )
            for m, d in config["descriptions"].items()
        }
        domains = {d: Domain(v["text"], tuple(v["examples"])) for d, v in config.get("domains", {}).items()}
        return cls(
            descriptions,
            temperature=config["temperature"],
            off_domain=config["off_domain"],
            in_domain=config["in_domain"],
            encoder_name=config["encoder"],
            domains=domains,
        )


class BlendedScorer(ScorePredictor):
    """A trained checkpoint mixed with the descriptions; a model the checkpoint lacks is scored from its description.

    For a model both know: `(1 - weight) * checkpoint + weight * descriptions`; the checkpoint's score alone
    for a model without a description; the descriptions score alone for one the checkpoint cannot score.
    Both read one embedding of the query, the checkpoint's encoder's.
    """

    method = "described"
    trainable = False

    def __init__(
        self,
        checkpoint: ScorePredictor,
        descriptions: DescriptionScorer,
        weight: float,
        quality: Mapping[str, float] | None = None,
    ) -> None:
        """Blend `checkpoint` and `descriptions` (whose encoder is replaced by the checkpoint's) with `weight`.

        Args:
            checkpoint: The trained predictor.
            descriptions: The described models (some may be unknown to the checkpoint).
            weight: Weight of the descriptions for a model both know, in [0, 1].
            quality: The declared quality of the checkpoint's models, which anchors the scale (default:
                the descriptions' own, else 0.5).

        Raises:
            ValueError: The weight is outside [0, 1].
        """
        if not 0 <= weight <= 1:
            raise ValueError(f"weight must lie in [0, 1], got {weight!r}")
        super().__init__(encoder_name=checkpoint.encoder_name)
        self.checkpoint, self.descriptions, self.weight = checkpoint, descriptions, float(weight)
        known = {m: d.quality for m, d in descriptions.descriptions.items()} | dict(quality or {})
        anchor = float(np.mean([known.get(m, 0.5) for m in checkpoint.models])) if checkpoint.models else 0.5
        self._anchor = max(anchor, 1e-6)  # mean declared quality of the known models
        descriptions._encoder, descriptions.encoder_name = None, checkpoint.encoder_name
        self.models = tuple(dict.fromkeys([*checkpoint.models, *descriptions.models]))

    @property
    def encoder(self) -> TextEncoder:
        """The checkpoint's encoder, shared with the descriptions."""
        return self.checkpoint.encoder

    @encoder.setter
    def encoder(self, value: TextEncoder) -> None:
        self.checkpoint.encoder = value
        self.descriptions.encoder = value

    def _fit(self, emb: F32Array, s: FloatArray, *, tasks: Sequence[str] | None, progress: bool) -> None:
        raise NotImplementedError("a blended scorer is built from a trained checkpoint, not fitted")

    def predict_embeddings(self, embeddings: npt.ArrayLike, *, tasks: Sequence[str] | None = None) -> FloatArray:
        """Return scores [queries, len(self.models)] in [0, 1]."""
        emb = as_embeddings(embeddings)
        if self.descriptions._encoder is None:  # one encoder for both, built once
            self.descriptions._encoder = self.checkpoint.encoder
        trained = self.checkpoint.predict_embeddings(emb)
        # Onto the checkpoint's scale: its mean score of this query per unit of declared quality.
        scale = trained.mean(axis=1, keepdims=True) / self._anchor if trained.shape[1] else 1.0
        described = self.descriptions.predict_embeddings(emb) * scale
        out = np.zeros((emb.shape[0], len(self.models)))
        for j, model in enumerate(self.models):
            if model not in self.descriptions.models:
                out[:, j] = trained[:, self.checkpoint.column(model)]
            elif model not in self.checkpoint.models:
                out[:, j] = described[:, self.descriptions.column(model)]
            else:
                t, d = trained[:, self.checkpoint.column(model)], described[:, self.descriptions.column(model)]
                out[:, j] = (1.0 - self.weight) * t + self.weight * d
        return np.clip(out, 0.0, 1.0)

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Not saved: a blend is rebuilt from its mix."""
        raise NotImplementedError("a blended scorer is rebuilt from its mix, not saved")

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], config: dict[str, Any]) -> BlendedScorer:
        """Not saved: a blend is rebuilt from its mix."""
        raise NotImplementedError("a blended scorer is rebuilt from its mix, not saved")
