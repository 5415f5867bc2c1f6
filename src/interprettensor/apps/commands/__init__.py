"""The command line's subcommands, one module each (see ``apps.cli.SUBCOMMANDS``); what several of them
share is in :mod:`.options`."""
