"""Text-to-speech baselines: espeak-ng as a TTS method, and the offline speaker-embedding network."""
