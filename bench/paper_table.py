"""The seed paper's table; see patchveil/experiments/paper_table.py (same as
`patchveil experiment paper-table`). Run from the repository root."""

from patchveil.experiments.paper_table import main

if __name__ == "__main__":
    main()
