"""The thin layer over ``runtime.Runtime``: the command line (and, later, HTTP)."""
