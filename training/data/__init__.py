"""Data for training and evaluation: simulated multi-microphone rooms and real-data loaders.

Modules: :mod:`.espeak` (offline TTS), :mod:`.sentences` (seeded text), :mod:`.noise`
(synthetic noise), :mod:`.rooms` (pyroomacoustics scenes and the clean-reference
definition), :mod:`.sources` (speech and noise sources), :mod:`.build` (the seeded data set
on disk), :mod:`.dataset` (PyTorch datasets), :mod:`.chime6` (CHiME-6 loader), :mod:`.cli`
(``ndpca data``). Import from the submodules; this package imports nothing heavy.
"""
