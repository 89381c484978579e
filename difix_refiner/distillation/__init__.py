"""The refine loop (Difix3D progressive distillation) as nerfstudio pipeline pieces.

- ``refine_config``: the ``--pipeline.refine.*`` options.
- ``pipeline``: the pipeline that runs refine rounds during ns-train.
- ``datamanager``: mixes pseudo views into the training batches.
- ``pseudo_views``: the pseudo-view store (poses, fixed images, masks), resumable.
"""
