"""Text-to-speech baselines: espeak-ng as a TTS method, and the training script of the offline speaker-embedding network."""
