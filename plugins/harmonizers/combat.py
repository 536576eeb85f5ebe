"""The ``combat`` harmonizer: ComBat (Johnson 2007; Fortin 2017/2018) on every connectome edge.

Each edge (upper triangle of the connectome, on the estimator's scale, Fisher z by default)
is a feature, each scan a sample and each dataset a batch. ComBat fits per edge a linear model
of the preserved covariates plus batch, shrinks the batches' location and scale estimates
towards each other (empirical Bayes) and removes them. Preserved: the scan's condition *per
drug* (control, or the drug's name: a dataset's drug effect is kept, not harmonised away) and
its mean FD, so neither is mistaken for a site effect.

The implementation is neuroCombat (Fortin's reference Python port, which neuroHarmonize wraps;
neuroHarmonize itself pins numpy < 2 and pandas < 3). ComBat treats scans as independent: the
within-subject pairing is left to the pooling model that follows.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from megafc.core import CONTROL_CONDITIONS, Connectomes, Harmonizer, InputError

log = logging.getLogger("megafc")

REFERENCES = [
    "Johnson WE, Li C, Rabinovic A (2007) Adjusting batch effects in microarray expression data using "
    "empirical Bayes methods. Biostatistics 8:118-127",
    "Fortin JP, Cullen N, Sheline YI, Taylor WD, Aselcioglu I, Cook PA, Adams P, Cooper C, Fava M, "
    "McGrath PJ, McInnis M, Phillips ML, Trivedi MH, Weissman MM, Shinohara RT (2018) Harmonization of "
    "cortical thickness measurements across scanners and sites. NeuroImage 167:104-120",
    "Yu M, Linn KA, Cook PA, Phillips ML, McInnis M, Fava M, Trivedi MH, Weissman MM, Shinohara RT, "
    "Sheline YI (2018) Statistical harmonization corrects site effects in functional connectivity "
    "measurements from multi-site fMRI data. Hum Brain Mapp 39:4213-4227",
]


class ComBatHarmonizer(Harmonizer):
    """ComBat (neuroCombat) across datasets on every edge, preserving condition per drug and FD."""

    name = "combat"
    references = REFERENCES
    packages = ("neuroCombat",)

    @dataclass
    class Config:
        #: Keep each drug's drug-vs-control difference (a categorical covariate: control or the
        #: drug's name). Turning this off harmonises the drug effect away in unbalanced sites.
        preserve_condition: bool = True
        #: Keep mean framewise displacement as a continuous covariate (needs mean_fd on every scan).
        preserve_fd: bool = True
        #: Shrink the sites' location/scale estimates towards each other (ComBat's empirical Bayes).
        empirical_bayes: bool = True
        #: Parametric priors (false: non-parametric, much slower on many edges).
        parametric: bool = True
        #: Remove site means only, not site scales.
        mean_only: bool = False

    def harmonize(self, connectomes: Connectomes, scans: pd.DataFrame) -> Connectomes:
        from neuroCombat import neuroCombat

        table = scans.set_index("scan_id").loc[list(connectomes.scan_ids)]
        covars, categorical, continuous = self.covariates(table)
        n = connectomes.matrices.shape[1]
        iu = np.triu_indices(n, 1)
        edges = connectomes.matrices[:, iu[0], iu[1]].T  # features x samples, as neuroCombat wants
        flat = np.flatnonzero(np.ptp(edges, axis=1) == 0)
        if len(flat):
            a, b = iu[0][flat[0]], iu[1][flat[0]]
            raise InputError(
                f"harmonizer 'combat': {len(flat)} edge(s) have the same value in every scan (e.g. "
                f"{connectomes.labels[a]} - {connectomes.labels[b]}); ComBat cannot standardise them"
            )
        log.info("harmonizer 'combat': %d edges x %d scans, %d datasets, preserving %s", edges.shape[0],
                 edges.shape[1], covars["batch"].nunique(), ", ".join(categorical + continuous) or "nothing")
        with contextlib.redirect_stdout(io.StringIO()):  # neuroCombat prints its progress
            out = neuroCombat(dat=edges, covars=covars, batch_col="batch",
                              categorical_cols=categorical or None, continuous_cols=continuous or None,
                              eb=self.config.empirical_bayes, parametric=self.config.parametric,
                              mean_only=self.config.mean_only)
        data = np.asarray(out["data"], dtype=float)
        if data.shape != edges.shape or not np.all(np.isfinite(data)):
            raise InputError("harmonizer 'combat': ComBat returned non-finite values (is some dataset's "
                             "variance zero on an edge?)")
        mats = np.zeros_like(connectomes.matrices)
        mats[:, iu[0], iu[1]] = data.T
        mats = mats + mats.transpose(0, 2, 1)
        return replace(connectomes, matrices=mats, estimator=f"{connectomes.estimator}, ComBat-harmonised")

    def covariates(self, table: pd.DataFrame) -> tuple[pd.DataFrame, list[str], list[str]]:
        """neuroCombat's covariate frame; refuses designs in which a site and a preserved
        covariate cannot be told apart (the fit would be singular)."""
        c = self.config
        covars = pd.DataFrame({"batch": table["dataset"].astype(str).to_numpy()})
        sizes = covars["batch"].value_counts()
        small = sorted(sizes[sizes < 2].index)
        if small:
            raise InputError(f"harmonizer 'combat': dataset(s) {small} have a single included scan; ComBat "
                             "needs at least two per dataset to estimate its site effect")
        categorical, continuous = [], []
        if c.preserve_condition:
            is_control = table["condition"].isin(CONTROL_CONDITIONS).to_numpy()
            covars["condition"] = np.where(is_control, "control", table["drug"].astype(str).to_numpy())
            one_kind = sorted(ds for ds, g in covars.groupby("batch")["condition"] if g.nunique() < 2)
            if one_kind:
                raise InputError(
                    f"harmonizer 'combat': dataset(s) {one_kind} have only drug or only control scans, so "
                    "their site effect and their drug effect cannot be told apart; leave them out "
                    "(loo_dataset=...) or set harmonizer.preserve_condition=false"
                )
            if covars["condition"].nunique() > 1:
                categorical.append("condition")
        if c.preserve_fd:
            fd = pd.to_numeric(table["mean_fd"], errors="coerce").to_numpy()
            if not np.all(np.isfinite(fd)):
                missing = list(table.index[~np.isfinite(fd)][:5])
                raise InputError(f"harmonizer 'combat': scans {missing} have no mean_fd; give it for every "
                                 "scan or set harmonizer.preserve_fd=false")
            covars["mean_fd"] = fd
            continuous.append("mean_fd")
        return covars, categorical, continuous

