"""Subcommand modules: each exposes HELP, configure(parser) and run(args)."""
