"""Ray Tune maps accuracy against measured attack success (platform side: ciphertext only).

`space` (the configurations a trial may take, only valid ones), `objectives` (what a trial is
scored on, the Pareto front, the default-preset rule), `trial` (the Ray Train loop and the Tune
function trainable) and `driver` (the Tuner: OptunaSearch with NSGA-II, ASHA). Encrypting a
trial's images and attacking them is the experimenter's and the auditor's part, handed in as a
callable object (`patchveil.experiments.frontier`); nothing here imports a cipher or a key.
"""
