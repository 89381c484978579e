"""Training pairs for the fixer: the Difix pair format and the make-pairs strategies."""
