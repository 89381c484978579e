"""Pieces every stage shares: the input-error type, atomic writes, image metrics, contact sheets, video, progress bars, and the registry of optional weights."""
