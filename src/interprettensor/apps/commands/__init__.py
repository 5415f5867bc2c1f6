"""The command line's subcommands that live in their own modules (see ``apps.cli.SUBCOMMANDS``)."""
