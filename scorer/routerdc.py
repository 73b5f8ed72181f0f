"""RouterDC (Chen et al., NeurIPS 2024): fine-tune the query encoder with dual contrastive losses.

Unlike RouteMoA (`scorer.routemoa`), which trains a small head over frozen embeddings, RouterDC
fine-tunes the transformer itself. Each model keeps a learned embedding; a query is routed to the model
whose embedding is most similar (cosine) to the query's fine-tuned embedding. Two losses shape the space:

- sample-LLM: for each query, the models among its top `top_k` by score are pulled toward the query and
  those among its bottom `top_k` pushed away (InfoNCE with temperature; ties go with their group);
- sample-sample: queries of the same cluster (the task, when tasks are given) are pulled together and
  pushed from queries of other clusters.

The encoder reads text, so training goes through `fit_texts` and prediction through `predict_texts` (or
`predict`, which takes texts anyway); `predict_embeddings` cannot be used, as frozen embeddings are not
what the fine-tuned encoder would produce. `wants_texts` marks it for a benchmark that hands texts
(not wired into `scorer.evaluate`: the method is an experiment, see `bench/results/routing_routerdc_finetune.md`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt

from scorer._base import F32Array, FloatArray, ScorePredictor, as_scores

if TYPE_CHECKING:
    import torch

__all__ = ["RouterDCConfig", "RouterDCPredictor", "rank_masks"]


class RouterDCConfig:
    """Fine-tuning settings.

    Args:
        epochs: Passes over the training queries.
        lr: AdamW learning rate of the transformer.
        head_lr: AdamW learning rate of the model embeddings.
        temperature: Temperature of both contrastive losses.
        top_k: Positives are each query's top `top_k` models by score, negatives its bottom `top_k`.
        sample_sample_weight: Weight of the sample-sample loss against the sample-LLM one.
        batch_size: Queries per step.
        max_length: Word pieces the encoder reads per query (the start of a longer one is dropped).
        threads: Torch CPU threads.
        model_path: Sentence-transformers folder to start from (None: the offline MiniLM).
    """

    def __init__(
        self,
        *,
        epochs: int = 2,
        lr: float = 5e-5,
        head_lr: float = 1e-3,
        temperature: float = 0.2,
        top_k: int = 3,
        sample_sample_weight: float = 1.0,
        batch_size: int = 32,
        max_length: int = 128,
        threads: int | None = 2,
        model_path: str | None = None,
    ) -> None:
        self.epochs = epochs
        self.lr = lr
        self.head_lr = head_lr
        self.temperature = temperature
        self.top_k = top_k
        self.sample_sample_weight = sample_sample_weight
        self.batch_size = batch_size
        self.max_length = max_length
        self.threads = threads
        self.model_path = model_path

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-able dict."""
        return dict(vars(self))


def rank_masks(scores: FloatArray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (positives, negatives), bool [n, M]: each query's top and bottom `top_k` models by score.

    Ties go with their group (positives win a tie that straddles both); a query whose known scores are all
    equal has neither; missing lines are neither.
    """
    known = np.isfinite(scores)
    n, m = scores.shape
    pos = np.zeros((n, m), dtype=bool)
    neg = np.zeros((n, m), dtype=bool)
    for i in range(n):
        row = scores[i, known[i]]
        if row.size < 2 or row.min() == row.max():
            continue
        k = min(top_k, row.size)
        ordered = np.sort(row)
        pos[i] = known[i] & (scores[i] >= ordered[-k]) & (scores[i] > row.min())
        neg[i] = known[i] & (scores[i] <= ordered[k - 1]) & (scores[i] < row.max()) & ~pos[i]
    return pos, neg


def _pair_contrast(logits: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Return the mean over (anchor, positive) pairs of -log(e^pos / (e^pos + sum over negatives e^neg))."""
    import torch

    neg_lse = torch.logsumexp(logits.masked_fill(~neg, -math.inf), dim=1, keepdim=True)
    per_pair = torch.nn.functional.softplus(neg_lse - logits)
    valid = pos & ~torch.isinf(neg_lse)
    return per_pair.masked_fill(~valid, 0.0).sum() / valid.sum().clamp(min=1)


class RouterDCPredictor(ScorePredictor):
    """RouterDC: a fine-tuned MiniLM query encoder and one learned embedding per model.

    Predicted scores are ``(1 + cos(query, model)) / 2``: a ranking, not a calibrated probability.

    Args:
        config: Fine-tuning settings.
        on_epoch: Called after each epoch with (epoch, predictor), e.g. to measure validation.
        **kwargs: Passed to `ScorePredictor` (encoder, encoder_name).
    """

    method: ClassVar[str] = "routerdc"
    wants_texts: ClassVar[bool] = True

    def __init__(
        self,
        config: RouterDCConfig | None = None,
        *,
        on_epoch: Callable[[int, RouterDCPredictor], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.config = config or RouterDCConfig()
        self.on_epoch = on_epoch
        self.history: dict[str, Any] = {}
        self._net: Any = None
        self._tokenizer: Any = None

    # -- model ------------------------------------------------------------------------------------------

    def _model_path(self) -> Path:
        if self.config.model_path is not None:
            return Path(self.config.model_path)
        from scorer.encoder import default_model_path

        return default_model_path()

    def _build(self, n_models: int) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = self._model_path()
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        # Routing prompts put the question last: keep the end of a long one.
        self._tokenizer.truncation_side = "left"
        encoder = AutoModel.from_pretrained(path, local_files_only=True)
        dim = int(encoder.config.hidden_size)
        net = torch.nn.Module()
        net.encoder = encoder
        net.model_emb = torch.nn.Parameter(torch.randn(n_models, dim) * 0.1)
        self._net = net

    def _embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Return L2-normalised mean-pooled embeddings of texts (gradients flow when training)."""
        import torch

        batch = self._tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.config.max_length, return_tensors="pt"
        )
        out = self._net.encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
        pooled = (out * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def _similarity(self, h: torch.Tensor) -> torch.Tensor:
        import torch

        return h @ torch.nn.functional.normalize(self._net.model_emb, dim=-1).T

    # -- training ---------------------------------------------------------------------------------------

    def _fit(self, emb: F32Array, s: FloatArray, *, tasks: Sequence[str] | None, progress: bool) -> None:
        raise ValueError("routerdc fine-tunes its encoder on text: call fit_texts with the query texts")

    def fit_texts(
        self,
        texts: Sequence[str],
        scores: npt.ArrayLike,
        models: Sequence[str],
        seed: int = 0,
        *,
        tasks: Sequence[str] | None = None,
        progress: bool = False,
    ) -> RouterDCPredictor:
        """Fine-tune the encoder and learn the model embeddings from training queries.

        Args:
            texts: The training queries' texts.
            scores: [queries, models] true scores in [0, 1], NaN where a model has no line.
            models: Model names, one per score column.
            seed: Seeds the initial model embeddings, the batch order and dropout.
            tasks: Each query's task: the clusters of the sample-sample loss (None: no such loss).
            progress: Show a progress bar.

        Returns:
            The predictor itself.
        """
        import torch
        from tqdm.auto import tqdm

        from scorer._neural import torch_threads

        s = as_scores(scores, len(texts), len(models))
        self.models, self.seed = tuple(models), seed
        cfg = self.config
        pos, neg = rank_masks(s, cfg.top_k)
        cluster = np.unique(np.asarray(tasks), return_inverse=True)[1] if tasks is not None else None
        with torch_threads(cfg.threads):
            torch.manual_seed(seed)
            self._build(len(models))
            net = self._net
            groups = [
                {"params": list(net.encoder.parameters()), "lr": cfg.lr},
                {"params": [net.model_emb], "lr": cfg.head_lr},
            ]
            opt = torch.optim.AdamW(groups, weight_decay=0.01)
            steps = cfg.epochs * math.ceil(len(texts) / cfg.batch_size)
            warmup = max(1, steps // 10)

            def schedule(step: int) -> float:
                return min(1.0, (step + 1) / warmup) * max(0.0, (steps - step) / max(1, steps - warmup))

            sched = torch.optim.lr_scheduler.LambdaLR(opt, [schedule, schedule])
            rng = np.random.default_rng([seed, 4243])
            losses: list[float] = []
            for epoch in range(cfg.epochs):
                net.train()
                order = rng.permutation(len(texts))
                batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
                total = 0.0
                for rows in tqdm(batches, desc=f"routerdc epoch {epoch + 1}", disable=not progress):
                    h = self._embed([texts[i] for i in rows])
                    loss = _pair_contrast(
                        self._similarity(h) / cfg.temperature, torch.from_numpy(pos[rows]), torch.from_numpy(neg[rows])
                    )
                    if cluster is not None and cfg.sample_sample_weight:
                        c = torch.from_numpy(cluster[rows])
                        same = (c[:, None] == c[None, :]) & ~torch.eye(len(rows), dtype=torch.bool)
                        loss = loss + cfg.sample_sample_weight * _pair_contrast(h @ h.T / cfg.temperature, same, ~same)
                    opt.zero_grad()
                    torch.autograd.backward(loss)
                    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                    opt.step()
                    sched.step()
                    total += float(loss.detach()) * len(rows)
                losses.append(total / len(texts))
                net.eval()
                if self.on_epoch is not None:
                    self.on_epoch(epoch + 1, self)
        self.history = {"train_loss": losses, "config": cfg.to_dict()}
        return self

    # -- prediction -------------------------------------------------------------------------------------

    def predict_texts(self, texts: Sequence[str], *, batch_size: int = 128) -> FloatArray:
        """Return predicted scores [len(texts), len(self.models)]: (1 + cosine similarity) / 2.

        Raises:
            ValueError: The predictor is not trained.
        """
        import torch

        from scorer._neural import torch_threads

        if self._net is None:
            raise ValueError("routerdc is not trained: call fit_texts first")
        out = np.zeros((len(texts), len(self.models)), dtype=np.float64)
        with torch_threads(self.config.threads), torch.no_grad():
            self._net.eval()
            for i in range(0, len(texts), batch_size):
                sim = self._similarity(self._embed(texts[i : i + batch_size]))
                out[i : i + batch_size] = sim.double().numpy()
        return np.clip((1.0 + out) / 2.0, 0.0, 1.0)

    def predict_embeddings(self, embeddings: npt.ArrayLike, *, tasks: Sequence[str] | None = None) -> FloatArray:
        """Refuse: the fine-tuned encoder needs the texts (use `predict_texts`)."""
        raise ValueError("routerdc reads text, not frozen embeddings: use predict_texts (or predict)")

    def predict(self, queries: Sequence[str], models: Sequence[str]) -> list[list[float]]:
        """Return one row of scores in [0, 1] per query, one column per named model."""
        cols = [self.column(m) for m in models]
        if not queries:
            return []
        pred = self.predict_texts(list(queries))
        return [[float(row[c]) for c in cols] for row in pred]

    # -- state ------------------------------------------------------------------------------------------

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Return (every fine-tuned weight, settings); the arrays hold the whole encoder (~90 MB)."""
        if self._net is None:
            raise ValueError("routerdc is not trained: nothing to save")
        arrays = {k: v.detach().cpu().numpy() for k, v in self._net.state_dict().items()}
        config = {"models": list(self.models), "seed": self.seed, "config": self.config.to_dict()}
        return arrays, config

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], config: dict[str, Any]) -> RouterDCPredictor:
        """Rebuild a predictor from what `state` returned (needs the base model folder)."""
        import torch

        predictor = cls(RouterDCConfig(**config["config"]))
        predictor.models, predictor.seed = tuple(config["models"]), int(config["seed"])
        predictor._build(len(predictor.models))
        predictor._net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()})
        predictor._net.eval()
        return predictor
