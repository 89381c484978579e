"""Pieces shared by every stage of the pipeline (the optional-weights registry, ...)."""
