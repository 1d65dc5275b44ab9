"""Code shared by the edge client and the receiver: STFT, models, NDPCA, rate maths, coding."""
