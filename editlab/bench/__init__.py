"""The bench: command line, runner, cache, backbones and tables."""
