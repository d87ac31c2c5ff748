"""The jigsaw audit; see patchveil/experiments/jigsaw_audit.py. Run from the repository root."""

from patchveil.experiments.jigsaw_audit import main

if __name__ == "__main__":
    main()
