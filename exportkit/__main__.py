"""``python -m exportkit`` runs the command line."""

from exportkit.cli import main

if __name__ == "__main__":
    main()
