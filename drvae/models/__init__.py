"""Models: plain `nn.Module` components and the LightningModules (systems) built on them."""
