"""One module per ``genframe`` subcommand; each has ``register(subparsers)``.

The CLI discovers the modules of this package, so adding a command is adding a module.
"""
