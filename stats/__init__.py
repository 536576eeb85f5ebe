"""megafc.stats: statistics any pooling model may use, built-in or third party.

Posterior summaries with their own diagnostics (``summarise_draws``), the run's sampler
diagnostics table (``sampler_diagnostics``) and its ``ok`` flag (``flag_ok``), on ArviZ's
estimators vectorised over quantities (``convergence``); how large R-hat gets by chance when
the chains have converged, and the run's R-hat warning from it (``rhat_chance``). Not part of
the contract: a pooling model may compute its summaries any way it likes, as long as its
result carries the columns ``megafc.core.EFFECT_COLUMNS`` names.
"""

from .posterior import (BFMI_MIN, ESS_MIN, RHAT_MAX, bfmi_warning, flag_ok, sampler_diagnostics, sampler_healthy,
                        summarise_draws, treedepth_hits)
from .rhat_chance import rhat_by_chance, rhat_warning

__all__ = ["BFMI_MIN", "ESS_MIN", "RHAT_MAX", "bfmi_warning", "flag_ok", "rhat_by_chance", "rhat_warning",
           "sampler_diagnostics", "sampler_healthy", "summarise_draws", "treedepth_hits"]
