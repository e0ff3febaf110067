"""The ``recon`` command line (typer). It parses and validates, then calls the library."""
