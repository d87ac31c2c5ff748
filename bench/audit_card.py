"""The audit card; see patchveil/experiments/audit_card.py. Run from the repository root."""

from patchveil.experiments.audit_card import main

if __name__ == "__main__":
    main()
