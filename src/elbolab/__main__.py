"""``python -m elbolab`` (also what ``torchrun -m elbolab train ...`` runs)."""

from elbolab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
