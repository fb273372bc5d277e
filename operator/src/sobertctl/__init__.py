"""sobertctl: the command line for sobert runs."""
