"""Class-conditional image generators: LlamaGen (raster), PAR (region-parallel), VAR (next-scale), digits minis."""
