"""The ``pandaset-data`` dataparser specification.

Kept apart from the method config: nerfstudio discovers dataparsers while importing its datamanagers,
which the method config itself imports, so the two must not live in one module.
"""

from __future__ import annotations

from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from difix_refiner.data.pandaset_dataparser import PandasetDataParserConfig

pandaset_dataparser = DataParserSpecification(
    config=PandasetDataParserConfig(),
    description="PandaSet sequence folder (cameras, poses, intrinsics, LiDAR) with metric scale and LiDAR seed points.",
)
