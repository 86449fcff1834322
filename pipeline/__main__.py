import os

# Idle OpenMP threads sleep instead of spinning: on a machine shared with other processes
# (a laptop, CI, two stages at once) spinning threads made torch on 2 cores several times
# slower. Set before torch is imported; an explicit OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pipeline.cli import main  # noqa: E402

main()
