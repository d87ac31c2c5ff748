"""The privacy frontier; see patchveil/experiments/frontier.py. Run from the repository root."""

from patchveil.experiments.frontier import main

if __name__ == "__main__":
    main()
