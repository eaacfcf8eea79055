"""The command line: click commands, the terminal Reporter, exit codes. Only this package talks to humans."""
