"""Feature (evaluator) networks used by metrics, one module each: Inception, I3D, VideoMAE, CLIP, the GenEval
detector, ASR, speaker and UTMOS models, VBench's evaluators (`vbench_nets`: DINO, CLIP and the LAION head;
`raft`; `musiq`), and the bundled offline nets (`digits_net`, `digit_motion_net`); `audio`
prepares speech for them."""
