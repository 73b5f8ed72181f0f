"""Training glue shared by the PyTorch scorers (Routoo, RouteMoA, matrix factorisation).

Each scorer is a small module over frozen, precomputed query embeddings with one learned embedding (and
bias) per model. Training is Adam on minibatches of queries, early-stopped on the mean squared error of
the predicted scores on a validation split carved from the training queries; the best epoch's weights
are kept. Adding a model trains only that model's embedding and bias, everything else frozen.
torch is imported inside functions so that importing the scorer package stays light.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from moai.scorer.predictors.base import F32Array, FloatArray, ScorePredictor, as_embeddings, nan_mse, validation_rows

if TYPE_CHECKING:
    import torch

__all__ = ["NeuralPredictor", "TrainConfig", "torch_threads"]

_PREDICT_CHUNK = 4096


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run torch on `n` CPU threads inside the block (None: leave torch's setting).

    The modules are tiny: with several threads the synchronisation costs more than the work, many
    times more when other processes keep the cores busy.
    """
    import torch

    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class TrainConfig:
    """Optimisation settings, fixed a priori (epochs are chosen by early stopping on validation).

    Args:
        hidden: Width of the query projection and of each model's embedding.
        max_epochs: Upper bound on passes over the training queries.
        patience: Epochs without a better validation error before stopping.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        batch_size: Queries per step.
        add_epochs: Upper bound on epochs when adding a model.
        threads: Torch CPU threads while training and predicting (None: torch's default).
    """

    def __init__(
        self,
        *,
        hidden: int = 128,
        max_epochs: int = 60,
        patience: int = 8,
        lr: float = 3e-3,
        weight_decay: float = 1e-5,
        batch_size: int = 64,
        add_epochs: int = 100,
        threads: int | None = 1,
    ) -> None:
        self.hidden = hidden
        self.max_epochs = max_epochs
        self.patience = patience
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.add_epochs = add_epochs
        self.threads = threads

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-able dict."""
        return dict(vars(self))


class NeuralPredictor(ScorePredictor):
    """A PyTorch scorer: `query(x) -> h`, `pair(h, model_emb, model_bias) -> out`, `scores(out) -> [n, M]`.

    Subclasses build the module (`_build`), give the pointwise loss on `pair`'s output (`_pointwise_loss`)
    and may add a loss over the whole batch (`_extra_loss`, e.g. RouteMoA's contrastive terms).
    """

    def __init__(self, config: TrainConfig | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config or TrainConfig()
        self.module: Any = None
        self.dim = 0
        self.history: dict[str, Any] = {}

    # -- what a subclass provides ---------------------------------------------------------------------

    @abstractmethod
    def _build(self, dim: int, n_models: int) -> torch.nn.Module:
        """Return a fresh module with `model_emb` [n_models, hidden] and `model_bias` [n_models]."""

    @abstractmethod
    def _pointwise_loss(self, out: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Return the mean loss of `pair`'s output against scores [n, M] over the known entries (mask)."""

    def _setup(self, scores: FloatArray) -> None:
        """Fix settings that depend on the training scores, before the module is built."""

    def _prepare(self, embeddings: np.ndarray, scores: FloatArray, seed: int) -> dict[str, np.ndarray]:
        """Return extra per-query arrays the batch loss needs (rows aligned with the training queries)."""
        return {}

    def _extra_loss(
        self, h: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, extra: dict[str, torch.Tensor]
    ) -> torch.Tensor | None:
        """Return a loss over the whole batch besides the pointwise one (None for none)."""
        return None

    def _config(self) -> dict[str, Any]:
        """Return the method's own settings (JSON-able), stored in checkpoints."""
        return {}

    def _configure(self, config: dict[str, Any]) -> None:
        """Restore the method's own settings from `_config`'s output."""

    # -- training -------------------------------------------------------------------------------------

    def _train(
        self,
        params: list[torch.nn.Parameter],
        n: int,
        batch_loss: Callable[[torch.Tensor], torch.Tensor],
        val_error: Callable[[], float] | None,
        max_epochs: int,
        seed: int,
        progress: bool,
        desc: str,
    ) -> dict[str, Any]:
        """Run Adam over shuffled minibatches; keep the parameters of the best validation epoch."""
        import torch
        from tqdm.auto import tqdm

        with torch_threads(self.config.threads):
            cfg = self.config
            opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
            gen = torch.Generator().manual_seed(seed)
            best = (math.inf, 0)
            best_params = [p.detach().clone() for p in params]
            stale = 0
            epochs = tqdm(range(1, max_epochs + 1), desc=desc, disable=not progress, leave=False)
            for epoch in epochs:
                self.module.train()
                perm = torch.randperm(n, generator=gen)
                for start in range(0, n, cfg.batch_size):
                    opt.zero_grad()
                    loss = batch_loss(perm[start : start + cfg.batch_size])
                    torch.autograd.backward(loss)
                    opt.step()
                if val_error is None:
                    continue
                self.module.eval()
                error = val_error()
                epochs.set_postfix(val_mse=f"{error:.4f}")
                if error < best[0] - 1e-6:
                    best, stale = (error, epoch), 0
                    best_params = [p.detach().clone() for p in params]
                else:
                    stale += 1
                    if stale >= cfg.patience:
                        break
            if val_error is not None:
                with torch.no_grad():
                    for p, saved in zip(params, best_params, strict=True):
                        p.copy_(saved)
            self.module.eval()
            return {"best_epoch": best[1] if val_error else max_epochs, "val_mse": best[0] if val_error else None}

    def _fit(self, emb: F32Array, s: FloatArray, *, tasks: Sequence[str] | None, progress: bool) -> None:
        """Train the module on the training queries, early-stopped on a validation split of them."""
        import torch

        self.dim = emb.shape[1]
        self._setup(s)
        torch.manual_seed(self.seed)
        self.module = self._build(self.dim, len(self.models))
        fit_rows, val_rows = validation_rows(len(emb), self.seed)
        x = torch.from_numpy(emb[fit_rows])
        known = np.isfinite(s[fit_rows])
        targets = torch.from_numpy(np.where(known, s[fit_rows], 0.0).astype(np.float32))
        mask = torch.from_numpy(known)
        extra = {k: torch.from_numpy(v) for k, v in self._prepare(emb[fit_rows], s[fit_rows], self.seed).items()}
        module = self.module

        def batch_loss(idx: torch.Tensor) -> torch.Tensor:
            h = module.query(x[idx])
            out = module.pair(h, module.model_emb, module.model_bias)
            loss = self._pointwise_loss(out, targets[idx], mask[idx])
            more = self._extra_loss(h, targets[idx], mask[idx], {k: v[idx] for k, v in extra.items()})
            return loss if more is None else loss + more

        def val_error() -> float:
            return nan_mse(self.predict_embeddings(emb[val_rows]), s[val_rows])

        params = [p for p in module.parameters() if p.requires_grad]
        self.history = self._train(
            params,
            len(fit_rows),
            batch_loss,
            val_error if len(val_rows) else None,
            self.config.max_epochs,
            self.seed,
            progress,
            f"{self.method} epochs",
        )

    def add_model(
        self, model: str, embeddings: npt.ArrayLike, scores: npt.ArrayLike, seed: int = 0, *, progress: bool = False
    ) -> None:
        """Learn only the new model's embedding and bias from its rows; every other weight stays frozen."""
        import torch

        emb, s = self._check_new_model(model, embeddings, scores)
        module = self.module
        module.eval()
        trainable = {name: p.requires_grad for name, p in module.named_parameters()}
        for p in module.parameters():
            p.requires_grad_(False)
        torch.manual_seed(seed)
        new_emb = torch.nn.Parameter(module.model_emb.detach().mean(dim=0, keepdim=True).clone())
        new_bias = torch.nn.Parameter(module.model_bias.detach().mean().reshape(1).clone())
        fit_rows, val_rows = validation_rows(len(emb), seed)
        x = torch.from_numpy(emb)
        targets = torch.from_numpy(s.astype(np.float32))[:, None]
        with torch.no_grad(), torch_threads(self.config.threads):
            h_all = module.query(x)

        def batch_loss(idx: torch.Tensor) -> torch.Tensor:
            rows = torch.from_numpy(fit_rows)[idx]
            out = module.pair(h_all[rows], new_emb, new_bias)
            return self._pointwise_loss(out, targets[rows], torch.ones_like(targets[rows], dtype=torch.bool))

        def val_error() -> float:
            with torch.no_grad():
                pred = module.scores(module.pair(h_all[torch.from_numpy(val_rows)], new_emb, new_bias))
            return nan_mse(pred.double().numpy(), s[val_rows][:, None])

        info = self._train(
            [new_emb, new_bias],
            len(fit_rows),
            batch_loss,
            val_error if len(val_rows) else None,
            self.config.add_epochs,
            seed,
            progress,
            f"add {model}",
        )
        with torch.no_grad():
            module.model_emb = torch.nn.Parameter(torch.cat([module.model_emb, new_emb]))
            module.model_bias = torch.nn.Parameter(torch.cat([module.model_bias, new_bias]))
        for name, p in module.named_parameters():
            p.requires_grad_(trainable[name])
        self.models = (*self.models, model)
        self.history.setdefault("added", {})[model] = info

    # -- prediction and state -------------------------------------------------------------------------

    def predict_embeddings(self, embeddings: npt.ArrayLike, *, tasks: Sequence[str] | None = None) -> FloatArray:
        """Return predicted scores [queries, models] in [0, 1]."""
        import torch

        if self.module is None:
            raise ValueError(f"{self.method} predictor is not trained: call fit() or load a checkpoint")
        emb = as_embeddings(embeddings)
        module = self.module
        module.eval()
        parts = []
        with torch.no_grad(), torch_threads(self.config.threads):
            for start in range(0, len(emb), _PREDICT_CHUNK):
                h = module.query(torch.from_numpy(emb[start : start + _PREDICT_CHUNK]))
                parts.append(module.scores(module.pair(h, module.model_emb, module.model_bias)).double().numpy())
        if not parts:
            return np.zeros((0, len(self.models)))
        scores: FloatArray = np.clip(np.concatenate(parts), 0.0, 1.0)
        return scores

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Return the module's weights (float32 arrays) and the config."""
        arrays = {k: v.detach().cpu().numpy().copy() for k, v in self.module.state_dict().items()}
        config = {
            "models": list(self.models),
            "seed": self.seed,
            "encoder": self.encoder_name,
            "dim": self.dim,
            "train": self.config.to_dict(),
            "history": self.history,
            **self._config(),
        }
        return arrays, config

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], config: dict[str, Any]) -> NeuralPredictor:
        """Rebuild from `state`."""
        import torch

        new = cls(config=TrainConfig(**config["train"]), encoder_name=config["encoder"])
        new._configure(config)
        new.models, new.seed, new.dim = tuple(config["models"]), int(config["seed"]), int(config["dim"])
        new.history = dict(config.get("history", {}))
        new.module = new._build(new.dim, len(new.models))
        new.module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
        new.module.eval()
        return new
