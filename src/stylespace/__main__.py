"""`python -m stylespace` runs the CLI."""
from stylespace.cli import main

main()
