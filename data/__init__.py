"""recon's bundled data, installed as the package ``recon.data``: prior weights and their
manifest (``priors/``), the benchmark sets (``benchmarks/``) and example run configs
(``configs/``). Read it through :func:`recon.datasets.data_dir`."""
