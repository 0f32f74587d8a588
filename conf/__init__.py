"""seqgen's Hydra configs; the wheel ships this folder as the package `seqgen.conf`."""
