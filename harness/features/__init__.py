"""Feature networks used by metrics (Inception, I3D, CLIP, ASR, speaker models), one module each."""
