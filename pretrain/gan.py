"""The GAN stage (Real-ESRGAN, Wang et al. 2021): perceptual and adversarial terms on the generator's loss, and a
U-Net discriminator trained in alternation with it (`pretrain.losses`).

Each optimizer step runs as BasicSR's ``RealESRGANModel.optimize_parameters``: first the generator's micro-steps
with the discriminator frozen (L1 + ``perceptual_weight`` * perceptual + ``gan_weight`` * GAN, through the
generator's engine: `GANStage.generator_loss` is its hook in `pretrain.engine.Trainer.losses`), then the
discriminator's, on the targets and on the same outputs detached (`GANStage.discriminator_step`).

Two DeepSpeed engines rather than one over both networks: an engine owns one optimizer and steps every parameter
it holds at each accumulation boundary, so a single engine would move the discriminator's Adam moments during the
generator's step (and the reverse) and could not give them separate LRs; with two, the generator's engine, its
checkpoint files and its EMA stay exactly what they are without the GAN stage. The discriminator trains in fp32
whatever the recipe's precision (Real-ESRGAN trains in fp32): spectral norm's power iteration in bf16 would divide
by a sigma with 8 bits of mantissa. Its engine saves into ``step-N/discriminator/``, before ``COMPLETE`` is written.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from pretrain.engine import build_ds_config, lr_lambda
from pretrain.losses import PerceptualLoss, UNetDiscriminatorSN, discriminator_gan_loss, generator_gan_loss
from pretrain.recipes import Recipe
from tasks.seeding import cpu_seeded

__all__ = ["GANStage", "DISCRIMINATOR_DIR", "DISCRIMINATOR_WEIGHTS", "check_gan_patches"]

DISCRIMINATOR_DIR = "discriminator"
DISCRIMINATOR_WEIGHTS = "discriminator.safetensors"


def check_gan_patches(recipe: Recipe) -> None:
    """Refuse what the U-Net discriminator cannot take: point outputs (``sr_any``), and target patches that are not
    multiples of 8 (its three downsamplings)."""
    from pretrain.data import hr_patch

    if "sr_any" in recipe.tasks:  # its outputs are sampled points (B, Q, 3), not images a discriminator can judge
        raise ValueError("the GAN stage judges images, and sr_any trains on sampled points: fine-tune sr_any "
                         "without gan_weight, or the GAN stage on a fixed-scale task (e.g. realsr_x4)")
    sides = {t: hr_patch(t, recipe.lr_patch, recipe.dn_patch) for t in recipe.tasks}
    bad = {t: side for t, side in sides.items() if side % 8}
    if bad:
        raise ValueError(f"the U-Net discriminator needs target patches divisible by 8, got {bad}; choose lr_patch "
                         "(the target is lr_patch * scale) and dn_patch accordingly")


class GANStage:
    """The discriminator's engine and the perceptual loss of a recipe with ``gan_weight > 0``.

    Args:
        recipe: the recipe (``gan_type``, ``gan_weight``, ``perceptual_weight``, ``disc_lr``, ``disc_feat``,
            ``perceptual_random_init``; betas, weight decay, schedule, grad_accum and ZeRO stage as the generator's).
        micro_batch, world_size: as the generator's engine (DeepSpeed's batch bookkeeping).
        device: the generator's engine device (the perceptual features run there).
    """

    def __init__(self, recipe: Recipe, micro_batch: int, world_size: int, device: torch.device):
        import deepspeed

        check_gan_patches(recipe)
        self.recipe = recipe
        # the same initial weights on every rank, and the training's random streams (CPU and CUDA) left as they were
        with cpu_seeded(recipe.seed):
            disc = UNetDiscriminatorSN(3, recipe.disc_feat)
            self.perceptual = (PerceptualLoss(random_init=recipe.perceptual_random_init).to(device)
                               if recipe.perceptual_weight > 0 else None)
        optimizer = torch.optim.AdamW(disc.parameters(), lr=recipe.disc_lr, betas=recipe.betas,
                                      weight_decay=recipe.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(recipe))  # the generator's LR curve
        self.ds_config = build_ds_config(replace(recipe, precision="fp32"), micro_batch, world_size)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=disc, optimizer=optimizer, lr_scheduler=scheduler, config=self.ds_config
        )
        self._kept: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []

    @property
    def module(self) -> nn.Module:
        """The discriminator (`UNetDiscriminatorSN`)."""
        return self.engine.module

    def generator_loss(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The perceptual and adversarial terms of one generator micro-step, weighted and summed over tasks (the
        recipe's task weights), and each term for the log. Keeps the outputs (detached) and the targets until
        `discriminator_step`."""
        r = self.recipe
        # frozen, and called as the bare module: the engine's forward hooks its output so that a backward through
        # it reduces the discriminator's gradients, and the generator's backward must leave the discriminator alone
        disc = self.module.requires_grad_(False)
        terms: dict[str, torch.Tensor] = {}
        for task, out in outputs.items():
            fake, real = out.float(), targets[task]
            if self.perceptual is not None:
                terms["perceptual"] = terms.get("perceptual", 0) + r.weight(task) * self.perceptual(fake, real)
            real_logits = disc(real).detach() if r.gan_type == "relativistic" else None
            gan = generator_gan_loss(r.gan_type, disc(fake), real_logits)
            terms["gan"] = terms.get("gan", 0) + r.weight(task) * gan
        self._kept.append(({t: o.detach().float() for t, o in outputs.items()}, targets))
        total = r.gan_weight * terms["gan"] + r.perceptual_weight * terms.get("perceptual", 0)
        return total, terms

    def discriminator_step(self) -> dict[str, torch.Tensor]:
        """Train the discriminator on the micro-batches the generator's step kept (real logits of the targets, fake
        logits of the detached outputs; its optimizer steps at the accumulation boundary). Returns the real and
        fake terms summed over those micro-batches."""
        r = self.recipe
        self.module.requires_grad_(True)
        self.engine.train()
        sums: dict[str, torch.Tensor] = {}
        for fakes, reals in self._kept:
            parts: dict[str, torch.Tensor] = {}
            for task, fake in fakes.items():
                real_term, fake_term = discriminator_gan_loss(r.gan_type, self.engine(reals[task]), self.engine(fake))
                parts["d_real"] = parts.get("d_real", 0) + r.weight(task) * real_term
                parts["d_fake"] = parts.get("d_fake", 0) + r.weight(task) * fake_term
            self.engine.backward(parts["d_real"] + parts["d_fake"])
            self.engine.step()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0) + v.detach()
        self._kept.clear()
        return sums

    def save_checkpoint(self, path: Path) -> None:
        """Save the discriminator's engine (weights, spectral-norm vectors, optimizer, scheduler) into
        ``path/discriminator/``, and its weights as ``path/discriminator.safetensors`` (fp32, whole: ZeRO <= 2 keeps
        the module unpartitioned) to be read without DeepSpeed. Collective: every rank calls it."""
        import torch.distributed as dist
        from safetensors.torch import save_file

        from tasks.io import atomic_path

        self.engine.save_checkpoint(str(path), tag=DISCRIMINATOR_DIR, save_latest=False)
        if not dist.is_initialized() or dist.get_rank() == 0:
            state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in self.module.state_dict().items()}
            with atomic_path(path / DISCRIMINATOR_WEIGHTS) as tmp:
                save_file(state, str(tmp))

    def load_checkpoint(self, path: Path) -> None:
        """Restore the discriminator's engine from ``path/discriminator/``."""
        from tasks.errors import InputError

        if not (path / DISCRIMINATOR_DIR).is_dir():
            raise InputError(f"{path} has no {DISCRIMINATOR_DIR}/ folder: it was saved without the GAN stage; resume "
                             "it with its own recipe, or start the GAN stage from it with --init")
        load_path, _client = self.engine.load_checkpoint(
            str(path), tag=DISCRIMINATOR_DIR, load_optimizer_states=True, load_lr_scheduler_states=True
        )
        if load_path is None:
            raise RuntimeError(f"DeepSpeed could not load the discriminator checkpoint at {path / DISCRIMINATOR_DIR}")
