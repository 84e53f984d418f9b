"""hipart_jax: HiPART (Hierarchical Pose AutoRegressive Transformer, CVPR 2025) in JAX/Flax."""
