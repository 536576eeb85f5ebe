"""megafc's command-line programs: ``megafc`` (the Hydra entry point), ``megafc-plugins`` and
``megafc-cache``, with what only a command line needs (error exits, sweep folder names, the
end-of-sweep comparison). They drive :mod:`megafc.core`; core never imports them."""
