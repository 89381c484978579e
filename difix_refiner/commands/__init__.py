"""``difix-refiner`` subcommands that are thin front ends over a library module."""
