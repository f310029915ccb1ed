# The VAE settings the generator-ablation scripts share (sourced by run.sh and
# posterior_rebalance.sh).
# the hierarchical VAE given room and time for detail: 16 spatial channels, beta 0.01, a
# warm-up + cosine learning rate from 0.002, 45 epochs (~4,000 steps at batch 16)
SHARP="vae.model.spatial_channels=16 vae.model.beta=0.01 vae.optimizer.lr=0.002 vae.trainer.max_epochs=45 'vae.scheduler={_target_:drvae.models.optim.WarmupCosine,_partial_:true,warmup_fraction:0.05,min_lr_ratio:0.01}'"
# 128 px: the simulator renders at 128, so lesions span several pixels; one more level
# keeps the spatial latent at S / 4 (32 x 32), as SHARP has it at 64 px
# (sim128/conv_clip1_s0 clips gradients: without, the conv VAE diverged at 128 px in epoch 16;
# sim128/conv_logvar_clamp_s0 is the same config after the encoder's logvar clamp landed: the
# stage cache resumes it from the failed run's last good checkpoint where that is still there)
AT128="data.image_size=128 vae.model.depth=5 vae.model.spatial_depth=2"
