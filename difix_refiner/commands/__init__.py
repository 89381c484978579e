"""The ``difix-refiner`` console script: ``cli`` and one thin module per subcommand."""
