"""Per-scan outputs as a BIDS derivative dataset, named and described the way xcp_d does.

``derivatives/megafc/`` holds ``dataset_description.json`` and one folder per source dataset
(subject labels repeat across studies), each with ``sub-<label>/[ses-<label>/]func/`` files:
region timeseries (``stat-mean_timeseries.tsv``) and connectivity matrices
(``stat-pearsoncorrelation_relmat.tsv``), each with a JSON sidecar saying what made it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .data import Atlas, Connectomes
from .extraction import derivative_name
from .fingerprints import package_versions
from .run_folder import StagedRun

#: Where the derivative dataset goes inside a run directory.
ROOT = "derivatives/megafc"
#: BIDS version the outputs follow.
BIDS_VERSION = "1.9.0"
def stat_entity(estimator: Any, name: str) -> str:
    """The relmat ``stat-`` entity: the one the estimator's own class declares (xcp_d's names; a
    subclass measures something else unless it says otherwise), else its name."""
    return vars(type(estimator)).get("stat_entity", "") or "".join(ch for ch in name if ch.isalnum())


def source_root(bold: str) -> str:
    """The BIDS(-derivatives) root a BOLD file lives in (the folder above ``sub-*``)."""
    parts = Path(bold).parts
    for i, part in enumerate(parts):
        if part.startswith("sub-"):
            return str(Path(*parts[:i]))
    return str(Path(bold).parent)


def dataset_description(sources: list[str]) -> dict[str, Any]:
    version = package_versions().get("megafc", "unknown")
    return {
        "Name": "megafc region timeseries and connectivity matrices",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "megafc", "Version": version,
                         "Description": "Atlas region extraction and connectivity estimation for mega-analysis"}],
        "SourceDatasets": [{"URL": Path(s).resolve().as_uri()} for s in sources],
    }


def write_derivatives(staged: StagedRun, timeseries: dict[str, np.ndarray] | None, connectomes: Connectomes,
                      scans: pd.DataFrame, atlas: Atlas, images: dict | None, plugins: dict[str, Any]) -> None:
    """Every included scan's timeseries (when extracted here) and connectome, with sidecars."""
    meta = scans.set_index("scan_id")
    estimator, denoiser = plugins["estimator"], plugins["denoiser"]
    precomputed = connectomes.estimator == "(precomputed)"
    stat = stat_entity(estimator, estimator.name)
    made_by = ({"name": "(precomputed: read from the input files)"} if precomputed else
               {"name": estimator.name, "description": estimator.summary(), **estimator.params()})
    is_z = precomputed or estimator.fisher_z
    measure = ("correlation (r; Fisher z = arctanh(r) is what megafc analyses)" if is_z else
               f"{estimator.summary()} (values as analysed; diagonal 0)")
    sources = sorted({source_root(images[s].bold) for s in connectomes.scan_ids}) if images is not None else []
    staged.write_json(f"{ROOT}/dataset_description.json", dataset_description(sources))
    for i, scan_id in enumerate(connectomes.scan_ids):
        row = meta.loc[scan_id]
        if images is not None:
            ents = dict(images[scan_id].entities)
        else:  # precomputed inputs: the scan table's entities (run and task keep files apart)
            ents = {"sub": str(row["subject"]), "ses": str(row["session"])}
            for key, col in (("task", "task"), ("run", "run")):
                if col in row.index and pd.notna(row[col]) and str(row[col]):
                    ents[key] = str(row[col])
        folder = f"{ROOT}/{row['dataset']}/sub-{ents['sub']}/" + (f"ses-{ents['ses']}/" if ents.get("ses") else "") + "func/"
        bold = [images[scan_id].bold] if images is not None else []
        ts_name = derivative_name(ents, atlas.name, "stat-mean_timeseries.tsv")
        if timeseries is not None and scan_id in timeseries:
            staged.write_table(folder + ts_name, pd.DataFrame(timeseries[scan_id], columns=atlas.labels))
            staged.write_json(folder + ts_name.replace(".tsv", ".json"), {
                "Sources": bold, "Atlas": atlas.name, "Denoising": {"name": denoiser.name, **denoiser.params()},
                **({"RepetitionTime": images[scan_id].t_r} if images is not None else {}),
            })
        if is_z:
            r = np.tanh(connectomes.matrices[i])
            np.fill_diagonal(r, 1.0)
        else:
            r = connectomes.matrices[i]
        name = derivative_name(ents, atlas.name, f"stat-{stat}_relmat.tsv")
        table = pd.DataFrame(r, index=atlas.labels, columns=atlas.labels)
        table.index.name = "Node"
        path = staged.path(folder + name)
        table.to_csv(path, sep="\t", float_format="%.6g")
        staged.write_json(folder + name.replace(".tsv", ".json"), {
            "Sources": [ts_name] if timeseries is not None else [],
            "Measure": measure,
            "Estimator": made_by,
            "Atlas": atlas.name,
        })
