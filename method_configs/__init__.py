"""nerfstudio wiring for difix-refiner (installed as the package ``difix_refiner_method_configs``)."""
