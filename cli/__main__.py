"""``python -m recon.cli``: the ``recon`` command, as torchrun launches it
(``torchrun --nproc-per-node N -m recon.cli reconstruct ...``)."""

from recon.cli.main import main

main()
