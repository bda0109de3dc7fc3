"""The training loop: build, train_step, validate, fit, state_dict / load_state_dict, close.

Hook points are plain method calls; there is no callback framework. Data order and
augmentation are a function of (seed, sample index), so a resumed run continues exactly.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
import random
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from bioim2im._version import __version__
from bioim2im.config import Preset, to_toml
from bioim2im.distributed import DistEnv
from bioim2im.errors import UserError
from bioim2im.model.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from bioim2im.model.network import amp_dtype, build_losses, build_model, components_used
from bioim2im.plugin.registry import ComponentRegistry
from bioim2im.training.plots import save_loss_curve, save_montage
from bioim2im.training.report import MetricsLog, Progress, read_metrics, trim_metrics
from bioim2im.training.tracking import Tracker


class CompiledOrEager(nn.Module):
    """``torch.compile`` of ``module`` (``train.compile``) that trains ``module`` itself, after
    one warning, when the compiler fails on it: torch 2.13's Inductor cannot lower the strided
    residual convolution of labelfree-3d's network for training ("ValueRangeError: Invalid
    ranges [0:-1]"), which stopped the run with the compiler's traceback. The compiler fails
    on the first step, before anything is computed, so the step runs again eagerly."""

    def __init__(self, module: nn.Module) -> None:
        import torch._dynamo.exc
        import torch._inductor.exc

        super().__init__()
        self.module = module
        # Not a submodule: its parameters are ``module``'s, and checkpoints hold the plain names.
        self.__dict__["compiled"] = torch.compile(module)
        self.failed = False
        self.compiler_errors = (
            torch._dynamo.exc.TorchDynamoException,
            torch._inductor.exc.InductorError,
        )

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.failed:
            return self.module(*args, **kwargs)
        try:
            return self.__dict__["compiled"](*args, **kwargs)
        except self.compiler_errors as exc:
            import warnings

            from bioim2im.prediction.blockwise.layout import compile_failure

            warnings.warn(
                f"train.compile: torch.compile failed on this network ({compile_failure(exc)}); "
                "training without it",
                RuntimeWarning,
                stacklevel=2,
            )
            self.failed = True
            return self.module(*args, **kwargs)


@dataclass
class FitOutcome:
    """Where :meth:`Trainer.fit` stopped."""

    step: int
    total_steps: int
    stop_reason: str | None
    metrics: dict[str, float]
    """The last validation's metrics (empty without validation data)."""
    signal: int | None = None
    """The signal (SIGINT, SIGTERM) that stopped training early, if one did."""


STOP_REQUESTED = "stop requested"
"""The ``stop_reason`` of a run stopped by :attr:`Trainer.should_stop`."""


class TrainingFailed(UserError):
    """Training cannot go on (diverged, out of memory); the last good checkpoint is kept."""

    exit_code = 1


def rng_states() -> dict[str, Any]:
    """Every global generator's state, as plain values that weights-only loading accepts."""
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = cast(
        tuple[Any, ...], np.random.get_state(legacy=True)
    )
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class Trainer:
    def __init__(
        self,
        preset: Preset,
        run_dir: Path,
        env: DistEnv,
        registry: ComponentRegistry,
        datasets: tuple[Any, Any],
    ) -> None:
        self.preset, self.run_dir, self.env, self.registry = preset, run_dir, env, registry
        cfg = preset.train
        self.train_data, self.val_data = datasets
        self.device = env.device
        self.notices: list[str] = []
        """What the run decided for the user, said once when training starts."""
        torch.manual_seed(cfg.seed)

        per_step = env.world_size * cfg.accumulate
        if preset.data.batch_size % per_step:
            raise UserError(
                f"data.batch_size {preset.data.batch_size} must be divisible by the number of processes "
                f"({env.world_size}) times train.accumulate ({cfg.accumulate})"
            )
        self.micro_batch = preset.data.batch_size // per_step
        self.total_steps = self._total_steps()
        from bioim2im.data.loader import usable_workers

        self.num_workers, notice = usable_workers(preset.data.num_workers)
        if notice is not None:
            self.notices.append(notice)

        model: nn.Module = build_model(preset, registry).to(self.device)
        self._apply_init_and_freeze(model)
        self.model = model = self._distributable(model)
        self.losses = {k: v.to(self.device) for k, v in build_losses(preset, registry).items()}
        generators = [model, *self._more_generators()]
        trainable = [p for network in generators for p in network.parameters() if p.requires_grad]
        self.optimizer = registry.build("optimizer", cfg.optimizer, parameters=trainable)
        self.scheduler = self.schedule(self.optimizer)
        self.amp_dtype = amp_dtype(cfg.amp, self.device)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype is torch.float16 and self.device.type == "cuda"
        )
        self.ema = None
        if cfg.ema is not None:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(
                model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True
            )
        self.forward_model = self._parallel(model)

        self.step = 0
        self.best: float | None = None
        self.bad_validations = 0
        self.stop_reason: str | None = None
        self._stop_signal: int | None = None
        self.should_stop: Callable[[], bool] | None = None
        """Asked after every step (rank 0's answer counts); True stops training as a signal
        does: a checkpoint is written and the run may be resumed (``api.train(should_stop=)``)."""
        self.tracker = Tracker()
        """The run's experiment trackers (``logging.loggers``), set by whoever runs ``fit``."""

    # ---- set-up helpers -------------------------------------------------------------------
    @property
    def _memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.preset.spatial_dims == 2 else torch.channels_last_3d

    def _distributable(self, module: nn.Module) -> nn.Module:
        """A network on the device, with SyncBatchNorm and channels-last as ``train`` asks."""
        cfg = self.preset.train
        if self.env.distributed and cfg.sync_batchnorm:
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        module = module.to(self.device)
        if cfg.channels_last:
            from bioim2im.prediction.blockwise.layout import set_layout

            # Each layer in its own rank's layout: a 3D network may end in 2D layers.
            module = set_layout(module, True)
        return module

    def schedule(self, optimizer: torch.optim.Optimizer) -> Any:
        """``train.scheduler`` for ``optimizer``. A warm-up as long as the whole run (a quick run
        of a preset, ``--set train.steps=40``) is shortened to a tenth of it, and the user told."""
        spec = self.preset.train.scheduler
        params = spec.params()
        warmup = params.get("warmup_steps")
        if isinstance(warmup, int) and warmup >= self.total_steps:
            params["warmup_steps"] = self.total_steps // 10
            notice = (
                f"train.scheduler.warmup_steps = {warmup} is not below the {self.total_steps} "
                f"training steps: warming up over the first {params['warmup_steps']} instead"
            )
            if notice not in self.notices:
                self.notices.append(notice)
        component = self.registry.get("scheduler", spec.name)
        return component.build(params, optimizer=optimizer, total_steps=self.total_steps)

    def _more_generators(self) -> list[nn.Module]:
        """Networks trained with the model by the same optimizer (CycleGAN's generator B -> A),
        built before the optimizer is."""
        return []

    def _parallel(self, module: nn.Module) -> nn.Module:
        """What the training step calls: the network under DDP and ``train.compile``."""
        if self.env.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            module = DistributedDataParallel(module, device_ids=ids)
        if self.preset.train.compile:
            module = CompiledOrEager(module)
        return module

    def _total_steps(self) -> int:
        cfg = self.preset.train
        if cfg.epochs is not None:
            return cfg.epochs * self.train_data.epoch_length(self.preset.data.batch_size)
        assert cfg.steps is not None
        return cfg.steps

    def _apply_init_and_freeze(self, model: nn.Module) -> None:
        cfg = self.preset.train
        if cfg.init_from is not None:
            self._initialise_from(model, cfg.init_from)
        if cfg.freeze:
            matched = 0
            for name, param in model.named_parameters():
                if any(fnmatch.fnmatch(name, pattern) for pattern in cfg.freeze):
                    param.requires_grad_(False)
                    matched += 1
            if not matched:
                raise UserError(
                    f"train.freeze {cfg.freeze} matches no parameter; names look like "
                    f"{', '.join(n for n, _ in list(model.named_parameters())[:3])}"
                )

    def _initialise_from(self, model: nn.Module, source_path: Path) -> None:
        """Load the tensors of ``train.init_from`` that fit ``model``; say what was loaded and
        what not, and refuse a source that fits too little of the model (another network?)."""
        cfg = self.preset.train
        path = checkpoint_path(source_path)
        source = load_checkpoint(path, map_location="cpu")["model"]
        own = model.state_dict()
        loaded = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
        skipped = [
            f"{k} ({'not in the checkpoint' if k not in source else _shapes(source[k], v)})"
            for k, v in own.items()
            if k not in loaded
        ] + [f"{k} (not in this model)" for k in source if k not in own]
        total = sum(v.numel() for v in own.values()) or 1
        share = sum(v.numel() for v in loaded.values()) / total
        summary = (
            f"train.init_from {path}: loaded {len(loaded)} of the model's {len(own)} tensors "
            f"({math.floor(share * 1000) / 10:g}% of its weights)"
        )
        if not loaded or (share < cfg.init_min_fraction and not cfg.init_partial):
            why = "nothing fits" if not loaded else f"less than {cfg.init_min_fraction:.0%} fits"
            raise UserError(
                f"{summary}: {why}; is it a checkpoint of another network? Set "
                "train.init_partial = true to start from these tensors anyway"
                if loaded
                else f"{summary}: nothing fits; is it a checkpoint of another network?",
                skipped[:10] + ([f"... and {len(skipped) - 10} more"] if len(skipped) > 10 else []),
            )
        model.load_state_dict(loaded, strict=False)
        listed = ", ".join(skipped[:5]) + (
            f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        )
        self.notices.append(summary + (f"; skipped: {listed}" if skipped else ""))

    # ---- one optimizer step ---------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        non_blocking = self.device.type == "cuda"
        out = {
            k: v.to(self.device, non_blocking=non_blocking)
            for k, v in batch.items()
            # A cost map of ones changes no loss: without it the losses skip a full-size
            # product per term, forward and backward (and nothing is copied to the GPU).
            if not (k.startswith("weight/") and bool(torch.all(v == 1)))
        }
        if self.preset.train.channels_last:
            out["image"] = out["image"].contiguous(memory_format=self._memory_format)
        return out

    def compute_losses(
        self, model: nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        with self._autocast():
            outputs = model(batch["image"])
        total = torch.zeros((), device=self.device)
        parts = {}
        for name, head in self.preset.model.heads.items():
            pred = outputs[name].float()
            try:
                value = self.losses[name](
                    pred, batch[f"target/{name}"], batch.get(f"weight/{name}")
                )
            except ValueError as exc:  # the loss's settings do not fit what it is given
                raise UserError(f"model.heads.{name}.loss ({head.loss.name}): {exc}") from None
            parts[name] = value.detach()
            total = total + head.weight * value
        return total, parts, outputs

    def train_step(self, batches: Iterator[dict[str, torch.Tensor]]) -> dict[str, float]:
        """One optimizer step over ``train.accumulate`` micro-batches; the mean of the losses."""
        for network in self._networks():
            network.train()
        accumulate = self.preset.train.accumulate
        sums: dict[str, torch.Tensor] = {}
        for micro in range(accumulate):
            batch = self.to_device(next(batches))
            # DDP's gradient synchronisation only on the last micro-batch.
            with self._no_sync(sync=micro == accumulate - 1):
                values = self.micro_step(batch, micro)
            for key, value in values.items():
                sums[key] = sums.get(key, torch.zeros((), device=self.device)) + value / accumulate
        self.step_optimizers()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.step += 1
        return {key: float(value) for key, value in sums.items()}

    def micro_step(self, batch: dict[str, torch.Tensor], micro: int) -> dict[str, torch.Tensor]:
        """Forward and backward of one micro-batch (gradients scaled for the accumulation);
        returns its detached losses: ``loss`` and ``loss/<part>``."""
        loss, parts, _ = self.compute_losses(self.forward_model, batch)
        self.scaler.scale(loss / self.preset.train.accumulate).backward()
        return {"loss": loss.detach(), **{f"loss/{k}": v for k, v in parts.items()}}

    def step_optimizers(self) -> None:
        """Step every optimizer once the micro-batches' gradients are in."""
        self.optimizer_step(self.optimizer, self.scaler, self.scheduler)

    def _networks(self) -> list[nn.Module]:
        """Every network the step trains."""
        return [self.model]

    def _parallel_networks(self) -> list[nn.Module]:
        """What the step calls: the networks under DDP (and torch.compile)."""
        return [self.forward_model]

    def _no_sync(self, sync: bool) -> contextlib.ExitStack:
        """DDP's gradient synchronisation off for every network unless ``sync``."""
        stack = contextlib.ExitStack()
        if not sync:
            for network in self._parallel_networks():
                module = network.module if isinstance(network, CompiledOrEager) else network
                if isinstance(module, DistributedDataParallel):
                    stack.enter_context(module.no_sync())
        return stack

    def optimizer_step(
        self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, scheduler: Any
    ) -> None:
        """Clip, step and zero ``optimizer``'s gradients, then advance its schedule."""
        if self.preset.train.clip_grad_norm is not None:
            scaler.unscale_(optimizer)
            parameters = [p for group in optimizer.param_groups for p in group["params"]]
            nn.utils.clip_grad_norm_(parameters, self.preset.train.clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step()

    # ---- validation -----------------------------------------------------------------------
    @torch.inference_mode()
    def validate(self) -> dict[str, float]:
        """Loss and each head's metrics on the validation patches (rank 0 only)."""
        from bioim2im.training.validation import validate

        model = self.ema.module if self.ema is not None else self.model
        model.eval()
        return validate(self, model)

    # ---- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "step": self.step,
            "total_steps": self.total_steps,
            "best": self.best,
            "bad_validations": self.bad_validations,
            "rng": rng_states(),
            "preset": to_toml(self.preset),
            "versions": {"bioim2im": __version__, **components_used(self.preset, self.registry)},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, ValueError, KeyError) as exc:
            lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
            # torch's first line only says that something failed; the next ones say what.
            detail = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s)") else lines[0]
            raise UserError(
                f"cannot continue the run in {self.run_dir}: its checkpoint does not fit the "
                f"network, optimizer or schedule of the preset (changed by --set?): {detail}"
            ) from None
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.step = int(state["step"])
        self.best = state.get("best")
        self.bad_validations = int(state.get("bad_validations", 0))
        set_rng_states(state["rng"])

    def save(self, name: str) -> Path:
        path = self.run_dir / "checkpoints" / f"{name}.pt"
        save_checkpoint(self.state_dict(), path)
        return path

    def save_periodic(self) -> None:
        """``checkpoints/step_<step>.pt``, keeping the ``train.keep_checkpoints`` most recent."""
        keep = self.preset.train.keep_checkpoints
        if not keep:
            return
        self.save(f"step_{self.step:07d}")
        periodic = sorted((self.run_dir / "checkpoints").glob("step_*.pt"))
        for old in periodic[:-keep]:
            old.unlink(missing_ok=True)

    # ---- the loop -------------------------------------------------------------------------
    def fit(self) -> FitOutcome:
        from bioim2im.data.loader import make_loader

        cfg, env = self.preset.train, self.env
        start_step = self.step
        loader = make_loader(
            self.train_data,
            batch_size=self.micro_batch,
            start_index=start_step * cfg.accumulate * env.world_size * self.micro_batch,
            rank=env.rank,
            world_size=env.world_size,
            num_workers=self.num_workers,
            seed=cfg.seed,
        )
        batches = iter(loader)
        if env.is_main:
            # A killed run logged steps past its last checkpoint; they are logged again now.
            trim_metrics(self.run_dir / "metrics.jsonl", after_step=start_step)
        log = (
            MetricsLog(self.run_dir / "metrics.jsonl", forward=self.tracker.metrics)
            if env.is_main
            else None
        )
        progress = (
            Progress(self.total_steps, start_step, self.preset.logging.progress)
            if env.is_main
            else None
        )
        if progress is not None:
            for notice in self.notices:
                progress.message(notice)
        deadline = time.monotonic() + cfg.max_minutes * 60 if cfg.max_minutes else None
        last_val: dict[str, float] = {}
        window_start, window_samples = time.perf_counter(), 0
        previous = self._install_signal_handlers()
        try:
            while self.step < self.total_steps:
                try:
                    values = self.train_step(batches)
                except torch.OutOfMemoryError:
                    raise TrainingFailed(
                        f"out of memory at step {self.step + 1} with data.batch_size {self.preset.data.batch_size} "
                        f"and data.patch_size {self.preset.data.patch_size}; use a smaller patch or batch, "
                        "or raise train.accumulate"
                    ) from None
                if not math.isfinite(values["loss"]):
                    last = self.run_dir / "checkpoints" / "last.pt"
                    kept = (
                        f"the last good checkpoint is {last}"
                        if last.exists()
                        else "no checkpoint was written yet"
                    )
                    raise TrainingFailed(
                        f"the loss became {values['loss']} at step {self.step}; {kept}. Lower "
                        "train.optimizer.lr, set train.clip_grad_norm, or check the data for extreme values"
                    )
                window_samples += self.preset.data.batch_size
                if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                    now = time.perf_counter()
                    values["samples_per_s"] = window_samples / max(now - window_start, 1e-9)
                    values["lr"] = self.optimizer.param_groups[0]["lr"]
                    window_start, window_samples = now, 0
                    if log is not None:
                        log.write({"step": self.step, **values})
                if progress is not None:
                    progress.update(
                        self.step,
                        {k: v for k, v in values.items() if k in ("loss", "lr", "samples_per_s")},
                    )
                if self.step % cfg.val_every == 0 or self.step == self.total_steps:
                    last_val = self._validate_and_keep_best(log, progress)
                if self.step % cfg.checkpoint_every == 0 and env.is_main:
                    self.save_periodic()
                    self.save("last")
                if deadline is not None and time.monotonic() > deadline:
                    self.stop_reason = f"train.max_minutes ({cfg.max_minutes}) reached"
                if self._stop_signal is not None:
                    self.stop_reason = f"{signal.Signals(self._stop_signal).name} received"
                if env.is_main and self.should_stop is not None and self.should_stop():
                    self.stop_reason = STOP_REQUESTED
                if self._any_rank(self.stop_reason is not None):
                    self.stop_reason = self.stop_reason or "another process stopped"
                    break
            if env.is_main:
                self.save("last")
                if not (self.run_dir / "checkpoints" / "best.pt").exists():
                    self.save("best")
            env.barrier()
        finally:
            self._restore_signal_handlers(previous)
            if progress is not None:
                if self.stop_reason:
                    progress.message(
                        f"stopped at step {self.step}: {self.stop_reason}; continue with --resume {self.run_dir}"
                    )
                progress.close()
            if log is not None:
                log.close()
        return FitOutcome(
            self.step, self.total_steps, self.stop_reason, last_val, signal=self._stop_signal
        )

    def _validate_and_keep_best(
        self, log: MetricsLog | None, progress: Progress | None
    ) -> dict[str, float]:
        if self.val_data is None:
            return {}
        cfg = self.preset.train
        results: dict[str, float] = {}
        if self.env.is_main:
            results = self.validate()
            if log is not None:
                log.write({"step": self.step, **results})
                # The run's figure, refreshed at every validation.
                save_loss_curve(read_metrics(log.path), self.run_dir / "loss_curve.png")
            if progress is not None:
                progress.message(
                    f"step {self.step}: " + "  ".join(f"{k} {v:.4f}" for k, v in results.items())
                )
            if cfg.checkpoint_metric not in results:
                raise UserError(
                    f"train.checkpoint_metric '{cfg.checkpoint_metric}' is not computed; "
                    f"available: {', '.join(sorted(results))}"
                )
            value = results[cfg.checkpoint_metric]
            better = self.best is None or (
                value < self.best if cfg.checkpoint_mode == "min" else value > self.best
            )
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(value)
            if better and math.isfinite(value):
                self.best, self.bad_validations = value, 0
                self.save("best")
            else:
                self.bad_validations += 1
            patience = cfg.early_stopping_patience
            if patience is not None and self.bad_validations >= patience:
                self.stop_reason = f"no improvement of {cfg.checkpoint_metric} in {patience} validations (early stopping)"
        self.stop_reason = self._broadcast(self.stop_reason)
        return results

    def _any_rank(self, flag: bool) -> bool:
        """True on every rank when any rank says so, so that all ranks stop at the same step."""
        if not self.env.distributed:
            return flag
        import torch.distributed as dist

        tensor = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

    def _broadcast(self, value: Any) -> Any:
        from bioim2im.distributed import broadcast_object

        return broadcast_object(value, self.env)

    def _install_signal_handlers(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}

        def request_stop(signum: int, frame: Any) -> None:
            self._stop_signal = signum

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                previous[sig] = signal.signal(sig, request_stop)
        return previous

    def _restore_signal_handlers(self, previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def snapshot(self, rows: list[list[np.ndarray]], heads: Sequence[str] = ()) -> None:
        titles = [["input", f"target: {h}", f"prediction: {h}"] for h in heads] or None
        path = self.run_dir / "snapshots" / f"step_{self.step:07d}.png"
        montage = save_montage(rows, path, titles)
        self.tracker.image(self.step, "snapshot", montage)


def _shapes(theirs: torch.Tensor, ours: torch.Tensor) -> str:
    return f"shape {list(theirs.shape)} in the checkpoint, {list(ours.shape)} here"
