"""Training the fixer: objectives, losses, frozen backbones, discriminators, the trainer and its checkpoints.

Heavy imports (transformers) happen only when a CLIP backbone is built.
"""
