"""Adversarial training on top of :class:`~bioim2im.training.trainer.Trainer`: pix2pix and CycleGAN.

pix2pix (Isola et al. 2017, paired data): the model (backbone + heads) is the generator. A
discriminator judges the output of ``adversarial.head``, next to the input image when
``adversarial.conditional``. The generator minimises its heads' losses (with their cost maps)
+ ``adversarial.weight`` x the adversarial loss of its output being judged real; the
discriminator minimises (loss(D(real), real) + loss(D(fake), fake)) / 2.

CycleGAN (Zhu et al. 2017, ``adversarial.cycle``, unpaired data): the inputs are domain A, the
head's targets domain B. A second generator, built from the same preset with the channels
swapped, maps B back to A, and each domain has a discriminator. The generators minimise
``weight`` x the adversarial losses both ways + ``cycle_weight`` x (L1(G_BA(G_AB(a)), a) +
L1(G_AB(G_BA(b)), b)) + ``identity_weight`` x (L1(G_AB(b), b) + L1(G_BA(a), a)). The heads' own
losses are not used: a target patch is no match for its input. Validation reports the cycle
losses.

With ``adversarial.pool_size`` > 0 (CycleGAN: 50) each discriminator judges, for each fake, either
it or one of up to ``pool_size`` older fakes (Shrivastava et al. 2017, as CycleGAN's code does):
the pool sees the global batch (gathered from every rank, in rank order) and its random choices
are a function of seed, step and micro-batch, so every rank holds the same pool, the checkpoint
keeps it, and ``--resume`` goes on exactly.

Each step computes the generators' and the discriminators' gradients on the same batches
(accumulated over ``train.accumulate`` micro-batches), then steps both, each with its own
optimizer, gradient scaler (fp16) and ``train.scheduler`` schedule. The checkpoint's ``model``
is the generator A -> B, which prediction uses as it is; the other networks and their optimizer
are saved beside it, so that ``--resume`` continues exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bioim2im.config import Preset
from bioim2im.distributed import DistEnv
from bioim2im.errors import UserError
from bioim2im.model.network import build_model
from bioim2im.plugin.registry import ComponentRegistry
from bioim2im.training.trainer import Trainer


def adversarial_loss(logits: torch.Tensor, real: bool, mode: str) -> torch.Tensor:
    """How far the logits are from judging real (or fake): LSGAN's squared distance to 1 (0),
    or the original GAN's binary cross-entropy."""
    logits = logits.float()
    target = torch.full_like(logits, float(real))
    if mode == "lsgan":
        return F.mse_loss(logits, target)
    return F.binary_cross_entropy_with_logits(logits, target)


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """``module`` takes no gradient inside: the generators' loss is judged by the discriminators
    without training them."""
    module.requires_grad_(False)
    try:
        yield
    finally:
        module.requires_grad_(True)


class ImagePool:
    """The last ``size`` generated images a discriminator has seen (see the module docstring)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []

    def exchange(self, fakes: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """What the discriminator judges instead of ``fakes`` (N, ...), image by image: while the
        pool fills, the fake itself (kept); then, with probability 1/2, a random older fake
        (replaced by this one), else this one."""
        if self.size == 0:
            return fakes
        judged = []
        for image in fakes.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                judged.append(image)
            elif rng.random() < 0.5:
                index = int(rng.integers(self.size))
                judged.append(self.images[index])
                self.images[index] = image.clone()
            else:
                judged.append(image)
        return torch.stack(judged)

    def state(self) -> torch.Tensor | None:
        return torch.stack(self.images).cpu() if self.images else None

    def load(self, images: torch.Tensor | None, device: torch.device) -> None:
        self.images = [] if images is None else list(images.to(device).unbind(0))


def gathered(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """``tensor`` of every rank, concatenated in rank order along the batch axis."""
    if not env.distributed:
        return tensor
    import torch.distributed as dist

    parts = [torch.empty_like(tensor) for _ in range(env.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def reversed_preset(preset: Preset, head: str) -> Preset:
    """The preset of CycleGAN's generator B -> A: the head's channels in, the input's out."""
    model = preset.model
    spec = model.heads[head]
    heads = {head: spec.model_copy(update={"out_channels": model.in_channels})}
    reverse = model.model_copy(update={"in_channels": spec.out_channels, "heads": heads})
    return preset.model_copy(update={"model": reverse})


class GanTrainer(Trainer):
    """The trainer of presets with an ``[adversarial]`` section (see the module docstring)."""

    def __init__(
        self,
        preset: Preset,
        run_dir: Path,
        env: DistEnv,
        registry: ComponentRegistry,
        datasets: tuple[Any, Any],
    ) -> None:
        adversarial = preset.adversarial
        assert adversarial is not None, "GanTrainer trains presets with an [adversarial] section"
        self.adversarial = adversarial
        self.head = adversarial.head or next(iter(preset.model.heads))
        self.generator_ba: nn.Module | None = None
        super().__init__(preset, run_dir, env, registry, datasets)
        in_channels = preset.model.in_channels
        out_channels = preset.model.heads[self.head].out_channels
        if adversarial.cycle:
            judged = {"a": in_channels, "b": out_channels}
        else:
            judged = {"b": out_channels + (in_channels if adversarial.conditional else 0)}
        self.discriminators = nn.ModuleDict(
            {domain: self._discriminator(channels) for domain, channels in judged.items()}
        )
        self.discriminator_optimizer = registry.build(
            "optimizer", adversarial.optimizer, parameters=list(self.discriminators.parameters())
        )
        # The discriminators follow the generators' schedule, as in pix2pix and CycleGAN. A
        # plateau schedule is stepped on the generators' validation metric only: theirs stays.
        self.discriminator_scheduler = self.schedule(self.discriminator_optimizer)
        self.discriminator_scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.scaler.is_enabled()
        )
        self.pools = {domain: ImagePool(adversarial.pool_size) for domain in judged}
        self._pool_rng = np.random.default_rng(0)
        # What the training step calls: DDP wrappers under torchrun, the networks otherwise.
        self.forward_ba = None if self.generator_ba is None else self._parallel(self.generator_ba)
        self.forward_discriminators = {d: self._parallel(m) for d, m in self.discriminators.items()}

    # ---- set-up helpers -------------------------------------------------------------------
    def _more_generators(self) -> list[nn.Module]:
        """CycleGAN's generator B -> A, trained by the model's optimizer (one optimizer for both
        generators, as in CycleGAN)."""
        if not self.adversarial.cycle:
            return []
        reverse = reversed_preset(self.preset, self.head)
        self.generator_ba = self._distributable(build_model(reverse, self.registry))
        return [self.generator_ba]

    def _discriminator(self, channels: int) -> nn.Module:
        spec = self.adversarial.discriminator
        network = self.registry.build(
            "discriminator", spec, spatial_dims=self.preset.spatial_dims, in_channels=channels
        )
        # A patch too small for the network fails here, with a message naming the settings.
        probe = torch.zeros(1, channels, *self.preset.data.patch_size)
        try:
            with torch.no_grad():
                network.eval()(probe)
        except (RuntimeError, ValueError) as exc:
            raise UserError(
                f"adversarial.discriminator '{spec.name}' cannot judge patches of data.patch_size "
                f"{self.preset.data.patch_size}: {str(exc).splitlines()[0]}; use larger patches "
                "or a smaller discriminator (e.g. fewer layers)"
            ) from None
        return self._distributable(network.train())

    # ---- losses ---------------------------------------------------------------------------
    def compute_losses(
        self, model: nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """pix2pix: the heads' losses. CycleGAN: the cycle-consistency losses (with ``model`` as
        the generator A -> B), and the translated inputs as the head's output. Validation
        reports these."""
        if self.generator_ba is None:
            return super().compute_losses(model, batch)
        cycle = self._cycle(model, self.generator_ba, batch)
        parts = {"cycle_a": cycle["cycle_a"].detach(), "cycle_b": cycle["cycle_b"].detach()}
        return cycle["cycle_a"] + cycle["cycle_b"], parts, {self.head: cycle["fake_b"]}

    def _cycle(
        self, g_ab: nn.Module, g_ba: nn.Module, batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        a, b = batch["image"], batch[f"target/{self.head}"]
        with self._autocast():
            fake_b = g_ab(a)[self.head]
            fake_a = g_ba(b)[self.head]
            cycle_a = F.l1_loss(g_ba(fake_b)[self.head].float(), a)
            cycle_b = F.l1_loss(g_ab(fake_a)[self.head].float(), b)
        return {"fake_a": fake_a, "fake_b": fake_b, "cycle_a": cycle_a, "cycle_b": cycle_b}

    def _discriminator_loss(
        self, domain: str, real: torch.Tensor, fake: torch.Tensor
    ) -> torch.Tensor:
        judge, mode = self.forward_discriminators[domain], self.adversarial.mode
        fake = fake.detach()
        if self.pools[domain].size:
            everyone = self.pools[domain].exchange(gathered(fake, self.env), self._pool_rng)
            fake = everyone.chunk(self.env.world_size)[self.env.rank]
        with self._autocast():
            real_logits, fake_logits = judge(real), judge(fake)
        return (
            adversarial_loss(real_logits, True, mode) + adversarial_loss(fake_logits, False, mode)
        ) / 2

    def _fooling_loss(self, domain: str, fake: torch.Tensor) -> torch.Tensor:
        """The generator's adversarial loss: how far ``fake`` is from being judged real."""
        judge = self.discriminators[domain]
        with frozen(judge), self._autocast():
            return adversarial_loss(judge(fake), True, self.adversarial.mode)

    def _pix2pix_losses(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        head_losses, parts, outputs = self.compute_losses(self.forward_model, batch)
        image, fake = batch["image"], outputs[self.head]
        real = batch[f"target/{self.head}"]
        if self.adversarial.conditional:
            fake, real = torch.cat([image, fake], dim=1), torch.cat([image, real], dim=1)
        adv_g = self._fooling_loss("b", fake)
        adv_d = self._discriminator_loss("b", real, fake)
        total = head_losses + self.adversarial.weight * adv_g
        values = {f"loss/{name}": value for name, value in parts.items()}
        return total, adv_d, {**values, "loss/adv_g": adv_g, "loss/adv_d": adv_d}

    def _cyclegan_losses(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        adversarial = self.adversarial
        assert self.forward_ba is not None
        cycle = self._cycle(self.forward_model, self.forward_ba, batch)
        a, b = batch["image"], batch[f"target/{self.head}"]
        adv_g = self._fooling_loss("b", cycle["fake_b"]) + self._fooling_loss("a", cycle["fake_a"])
        adv_d = self._discriminator_loss("b", b, cycle["fake_b"]) + self._discriminator_loss(
            "a", a, cycle["fake_a"]
        )
        cycle_loss = cycle["cycle_a"] + cycle["cycle_b"]
        total = adversarial.weight * adv_g + adversarial.cycle_weight * cycle_loss
        values = {
            "loss/cycle_a": cycle["cycle_a"],
            "loss/cycle_b": cycle["cycle_b"],
            "loss/adv_g": adv_g,
            "loss/adv_d": adv_d,
        }
        if adversarial.identity_weight > 0:
            # A generator given an image of its own output domain should leave it alone.
            with self._autocast():
                identity = F.l1_loss(self.forward_model(b)[self.head].float(), b) + F.l1_loss(
                    self.forward_ba(a)[self.head].float(), a
                )
            total = total + adversarial.identity_weight * identity
            values["loss/identity"] = identity
        return total, adv_d, values

    # ---- one optimizer step ---------------------------------------------------------------
    def _networks(self) -> list[nn.Module]:
        generators = [self.model] if self.generator_ba is None else [self.model, self.generator_ba]
        return [*generators, self.discriminators]

    def _parallel_networks(self) -> list[nn.Module]:
        generators = [self.forward_model] + ([] if self.forward_ba is None else [self.forward_ba])
        return [*generators, *self.forward_discriminators.values()]

    def micro_step(self, batch: dict[str, torch.Tensor], micro: int) -> dict[str, torch.Tensor]:
        """The generators' and the discriminators' gradients on the same micro-batch."""
        self._pool_rng = np.random.default_rng([self.preset.train.seed, self.step, micro])
        if self.generator_ba is None:
            total, adv_d, values = self._pix2pix_losses(batch)
        else:
            total, adv_d, values = self._cyclegan_losses(batch)
        accumulate = self.preset.train.accumulate
        self.scaler.scale(total / accumulate).backward()
        self.discriminator_scaler.scale(adv_d / accumulate).backward()
        return {key: value.detach() for key, value in {"loss": total, **values}.items()}

    def step_optimizers(self) -> None:
        super().step_optimizers()
        self.optimizer_step(
            self.discriminator_optimizer, self.discriminator_scaler, self.discriminator_scheduler
        )

    # ---- validation -----------------------------------------------------------------------
    @torch.inference_mode()
    def validate(self) -> dict[str, float]:
        if self.generator_ba is not None:
            self.generator_ba.eval()
        return super().validate()

    # ---- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state |= {
            "discriminators": self.discriminators.state_dict(),
            "discriminator_optimizer": self.discriminator_optimizer.state_dict(),
            "discriminator_scheduler": self.discriminator_scheduler.state_dict(),
            "discriminator_scaler": self.discriminator_scaler.state_dict(),
        }
        if self.generator_ba is not None:
            state["generator_ba"] = self.generator_ba.state_dict()
        state["image_pools"] = {domain: pool.state() for domain, pool in self.pools.items()}
        component = self.registry.get("discriminator", self.adversarial.discriminator.name)
        state["versions"][component.package] = component.version
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.discriminators.load_state_dict(state["discriminators"])
        self.discriminator_optimizer.load_state_dict(state["discriminator_optimizer"])
        self.discriminator_scheduler.load_state_dict(state["discriminator_scheduler"])
        self.discriminator_scaler.load_state_dict(state["discriminator_scaler"])
        if self.generator_ba is not None:
            self.generator_ba.load_state_dict(state["generator_ba"])
        for domain, images in state.get("image_pools", {}).items():
            if domain in self.pools:
                self.pools[domain].load(images, self.device)
