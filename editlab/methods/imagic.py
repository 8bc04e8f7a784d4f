"""Imagic: Text-Based Real Image Editing with Diffusion Models (Kawar et al., CVPR 2023).

1. Text embedding optimisation: starting from the target prompt's embedding e_tgt, optimise an embedding e_opt
   so that the frozen model reconstructs the source image (the denoising loss at random timesteps).
2. Model fine-tuning: with e_opt frozen, fine-tune the UNet on the same loss, so that e_opt reproduces the source
   faithfully.
3. Interpolation and generation: sample from noise with the fine-tuned UNet under
   e = eta * e_tgt + (1 - eta) * e_opt (classifier-free guided DDIM).

Every edit fine-tunes a fresh copy of the backbone's UNet: the shared backbone is never modified.
Randomness (timesteps and noise of both optimisations, initial noise of the generation) comes from the sample's
generator, so an edit is reproducible.

Precision: both optimisations run in float32 whatever the backbone's dtype (the embedding, the latents and the
UNet copy are float32; Adam on float16 weights would drop updates of 2e-6 below half precision's resolution).
The fine-tuned copy is cast to the backbone's dtype for the generation, as mixed-precision training keeps float32
master weights. The official code this follows (diffusers ``examples/community/imagic_stable_diffusion.py``)
trains under accelerate's fp16 autocast, which also keeps float32 weights.

Preset ``sd``: 1000 embedding-optimisation steps and 1500 fine-tuning steps (the paper's step counts for Stable
Diffusion), Adam at learning rates 1e-3 (embedding) and 2e-6 (UNet) of diffusers' community Imagic pipeline,
eta = 0.7 (the paper finds values around 0.6-0.8 balance fidelity to the source and to the text), guidance 7.5,
50 steps. Backbones without a preset use the same optimisation settings with their own guidance and step count.
This takes minutes per image on a GPU. For CPU runs on the 64-px ShapesWorld backbone, about 100 + 100 steps at
learning rates 1e-3 and 1e-5 is a practical budget (``configs/experiment/taxonomy.yaml`` sets such a budget).
Deviation: the source latents are the VAE posterior's mode (the community pipeline draws a sample; a trained
VAE's posterior is narrow, std ~1e-4).
"""

from __future__ import annotations

import copy
from typing import ClassVar

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, StableDiffusionPipeline

from editlab.methods.base import EditMethod
from editlab.methods.common import ddim_scheduler, encode_image, encode_prompt
from editlab.methods.defaults import fill_unset
from editlab.methods.presets import Preset
from editlab.types import Condition, EditOutput, LearningStrategy, Sample, TaskType, Taxonomy


class Imagic(EditMethod):
    name = "imagic"
    taxonomy = Taxonomy(
        learning_strategy=LearningStrategy.TESTING_TIME_FINETUNING,
        conditions=(Condition.PROMPT_PAIR,),
        tasks=tuple(TaskType),
        paper="Kawar et al., Imagic, CVPR 2023",
    )
    presets: ClassVar[dict[str, Preset]] = {
        "sd": Preset(
            source="Kawar et al. 2023, Sec. 4 (SD: 1000 + 1500 steps, eta ~0.7); huggingface/diffusers "
                   "examples/community/imagic_stable_diffusion.py (Adam lr 1e-3 / 2e-6, guidance 7.5, 50 steps)",
            settings={"embedding_steps": 1000, "embedding_lr": 1e-3, "finetune_steps": 1500, "finetune_lr": 2e-6,
                      "eta": 0.7, "guidance_scale": 7.5, "num_inference_steps": 50},
        ),
    }

    def __init__(self, embedding_steps: int | None = None, embedding_lr: float | None = None,
                 finetune_steps: int | None = None, finetune_lr: float | None = None, eta: float | None = None,
                 guidance_scale: float | None = None, num_inference_steps: int | None = None) -> None:
        super().__init__(embedding_steps=embedding_steps, embedding_lr=embedding_lr, finetune_steps=finetune_steps,
                         finetune_lr=finetune_lr, eta=eta, guidance_scale=guidance_scale,
                         num_inference_steps=num_inference_steps)
        if (embedding_steps or 0) < 0 or (finetune_steps or 0) < 0:
            raise ValueError("embedding_steps and finetune_steps must be >= 0")
        self.embedding_steps = embedding_steps
        self.embedding_lr = embedding_lr
        self.finetune_steps = finetune_steps
        self.finetune_lr = finetune_lr
        self.eta = eta
        self.guidance_scale = guidance_scale
        self.num_inference_steps = num_inference_steps

    def setup(self, backbone, cache_dir=None) -> None:
        super().setup(backbone, cache_dir)
        self.preset_record["defaults"] = fill_unset(self, {
            "embedding_steps": 1000, "embedding_lr": 1e-3, "finetune_steps": 1500, "finetune_lr": 2e-6, "eta": 0.7,
            "guidance_scale": backbone.guidance_scale, "num_inference_steps": backbone.num_inference_steps})
        self.noise_scheduler = DDPMScheduler.from_config(backbone.scheduler.config)

    def _loss(self, unet, latents: torch.Tensor, embeds: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Denoising loss at one random timestep (the training objective of the diffusion model)."""
        num_train = self.noise_scheduler.config.num_train_timesteps
        t = torch.randint(0, num_train, (1,), generator=generator).to(latents.device)
        noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32).to(latents.device, latents.dtype)
        noisy = self.noise_scheduler.add_noise(latents, noise, t)
        return F.mse_loss(unet(noisy, t, encoder_hidden_states=embeds).sample.float(), noise.float())

    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        bb = self.backbone
        # 1. Source latents, target embedding and a private copy of the UNet (frozen for now), all in float32
        latents = encode_image(bb, sample.source_image).float()
        e_tgt = encode_prompt(bb, [sample.target_prompt]).float()
        unet = copy.deepcopy(bb.unet).float().requires_grad_(False)
        info = {}
        # 2. Optimise the embedding to reconstruct the source with the frozen UNet
        e_opt = e_tgt.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([e_opt], lr=self.embedding_lr)
        for _ in range(self.embedding_steps):
            loss = self._loss(unet, latents, e_opt, generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            info["embedding_loss"] = loss.item()
        e_opt = e_opt.detach()
        # 3. Fine-tune the UNet copy with the optimised embedding frozen
        if self.finetune_steps:
            unet.requires_grad_(True).train()
            optimizer = torch.optim.Adam(unet.parameters(), lr=self.finetune_lr)
            for _ in range(self.finetune_steps):
                loss = self._loss(unet, latents, e_opt, generator)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                info["finetune_loss"] = loss.item()
            unet.requires_grad_(False).eval()
            del optimizer
        # 4. Interpolate the embeddings and generate with the fine-tuned UNet, in the backbone's dtype
        embeds = (self.eta * e_tgt + (1 - self.eta) * e_opt).to(bb.dtype)
        pipe = bb.pipeline(StableDiffusionPipeline, unet=unet.to(bb.dtype), scheduler=ddim_scheduler(bb))
        image = pipe(
            prompt_embeds=embeds,
            negative_prompt_embeds=encode_prompt(bb, [""]),
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            height=bb.resolution,
            width=bb.resolution,
            generator=generator,
        ).images[0]
        return EditOutput(image=image, info=info)
