"""The command line: the entry point, its flags, headless runs, and one module per subcommand."""
