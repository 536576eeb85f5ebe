"""Region timeseries from preprocessed BOLD images: nilearn maskers, cached, parallel.

A scan's timeseries is cached under a key made of the content fingerprints of its BOLD, mask
and confounds files, the atlas and the denoiser settings, so a rerun or a sweep sharing those
settings never extracts it again. The cache is a BIDS-derivative folder of xcp_d-style TSVs.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .data import Atlas, ScanImages
from .errors import InputError, MegafcError, PluginError
from .fingerprints import fingerprint_file, fingerprint_value, remembered_fingerprint
from .run_folder import write_text_atomic
from .plugin import Denoiser
from .python_warnings import MAX_FROM_ONE_PLACE, Raised, more_like, recording

log = logging.getLogger("megafc")

#: Bump when extraction changes in a way that invalidates cached timeseries.
EXTRACTION_VERSION = 1


#: Why a scan was not extracted (it is then excluded with this reason in scans.tsv).
TOO_FEW_FOR_CONFOUNDS = "too few volumes left after censoring to regress out the confounds"


@dataclass
class Extracted:
    scan_id: str
    timeseries: np.ndarray | None  # None when the scan could not be extracted (see ``skipped``)
    n_volumes: int
    n_kept: int
    cached: bool
    path: str
    skipped: str = ""
    #: Python warnings raised while extracting it (kept with its cached copy too)
    warnings: list[Raised] = field(default_factory=list)


def atlas_fingerprint(atlas: Atlas) -> str:
    parts: dict[str, Any] = {"name": atlas.name, "labels": atlas.labels}
    if atlas.maps is not None:
        parts["maps"] = fingerprint_file(atlas.maps)
        parts["index"] = atlas.regions["index"].astype(int).tolist()
    if atlas.coords is not None:
        parts["coords"] = np.round(np.asarray(atlas.coords, dtype=float), 4).tolist()
        parts["radius"] = atlas.radius
    return fingerprint_value(parts)


def derivative_name(entities: dict[str, str], atlas_name: str, suffix: str) -> str:
    """xcp_d-style file name, e.g. sub-01_ses-1_task-rest_space-X_seg-schaefer_stat-mean_timeseries.tsv."""
    keys = ("sub", "ses", "task", "acq", "run", "space")
    parts = [f"{k}-{entities[k]}" for k in keys if entities.get(k)]
    seg = "".join(ch for ch in atlas_name if ch.isalnum())
    return "_".join(parts + [f"seg-{seg}", suffix])


#: Subfolder of the cache holding remembered file hashes (see ``remembered_fingerprint``).
HASHES = ".hashes"


def scan_key(images: ScanImages, atlas_fp: str, denoiser: Denoiser, cache_dir: str | None = None) -> str:
    memo = Path(cache_dir) / HASHES if cache_dir else None
    files = {k: remembered_fingerprint(getattr(images, k), memo) for k in ("bold", "mask", "confounds")
             if getattr(images, k)}
    return fingerprint_value({
        "files": files, "atlas": atlas_fp, "denoiser": denoiser.name, "params": denoiser.params(),
        "signal": denoiser.signal_kwargs(), "t_r": images.t_r, "version": EXTRACTION_VERSION,
    }).split(":")[1]


def _masker(atlas: Atlas, images: ScanImages, denoiser: Denoiser):
    from nilearn.maskers import NiftiLabelsMasker, NiftiSpheresMasker

    kwargs = dict(t_r=images.t_r, **denoiser.signal_kwargs())
    if atlas.maps is not None:
        return NiftiLabelsMasker(labels_img=atlas.maps, mask_img=images.mask, resampling_target="data", **kwargs)
    if atlas.coords is not None:
        return NiftiSpheresMasker(seeds=np.asarray(atlas.coords), radius=atlas.radius, mask_img=images.mask,
                                  allow_overlap=True, **kwargs)
    raise InputError(f"atlas '{atlas.name}' has no image or coordinates, so images cannot be extracted with it")


def _check_bold(images: ScanImages) -> int:
    import nibabel as nib

    if not os.path.exists(images.bold):
        raise InputError(f"BOLD file not found: {images.bold}")
    try:
        shape = nib.load(images.bold).shape
    except Exception as exc:
        raise InputError(f"{images.bold}: not a readable NIfTI image ({exc})") from exc
    if len(shape) != 4:
        raise InputError(f"{images.bold}: expected a 4D BOLD image, got {len(shape)}D with shape {shape}")
    return int(shape[3])


def denoiser_confounds(scan_id: str, bold: str, denoiser: Denoiser, n_volumes: int,
                       action: str) -> tuple[Any, Any, Extracted | None]:
    """(confounds, sample mask, None) of one scan from its denoiser; or, when too few volumes are
    left for the confounds, the scan's ``Extracted`` marking it excluded (third item)."""
    try:
        confounds, sample_mask = denoiser.confounds(bold)
    except MegafcError:
        raise
    except Exception as exc:
        raise PluginError(f"denoiser '{denoiser.name}' failed on {bold}: {type(exc).__name__}: {exc}") from exc
    if confounds is not None and len(confounds) != n_volumes:
        raise InputError(f"{bold}: the confounds file has {len(confounds)} rows but scan '{scan_id}' has "
                         f"{n_volumes} volumes")
    n_kept = n_volumes if sample_mask is None else int(np.size(sample_mask))
    n_confounds = 0 if confounds is None else int(np.shape(confounds)[1]) if np.ndim(confounds) == 2 else 1
    if n_kept < n_confounds + 2:  # +1 for the mean: no residual degrees of freedom, a scan to exclude
        log.warning("%s: %d of %d volumes left after censoring, %d confound regressors: not %s (excluded)",
                    bold, n_kept, n_volumes, n_confounds, action)
        return confounds, sample_mask, Extracted(scan_id, None, n_volumes, n_kept, False, "", TOO_FEW_FOR_CONFOUNDS)
    return confounds, sample_mask, None


def extract_scan(scan_id: str, images: ScanImages, atlas: Atlas, denoiser: Denoiser, cache_dir: str | None,
                 atlas_fp: str) -> Extracted:
    """Timeseries of one scan in atlas region order; from the cache when possible. The Python
    warnings raised while extracting it come with it (from a worker process, where they would
    reach only its stderr) and are kept in its cache sidecar, so a rerun from the cache says them
    again."""
    with recording() as said:
        n_volumes = _check_bold(images)
    name = derivative_name(images.entities, atlas.name, "stat-mean_timeseries.tsv")
    key = scan_key(images, atlas_fp, denoiser, cache_dir) if cache_dir else None
    if cache_dir:
        folder = Path(cache_dir) / key
        tsv, sidecar = folder / name, folder / name.replace(".tsv", ".json")
        if tsv.exists() and sidecar.exists():
            meta = json.loads(sidecar.read_text())
            ts = pd.read_csv(tsv, sep="\t")[atlas.labels].to_numpy(dtype=float)
            return Extracted(scan_id, ts, meta["n_volumes"], meta["n_kept"], True, str(tsv),
                             warnings=said + [Raised(*w) for w in meta.get("warnings", [])])
    with recording() as extracting:
        confounds, sample_mask, too_few = denoiser_confounds(scan_id, images.bold, denoiser, n_volumes, "extracted")
        if too_few is None:
            masker = _masker(atlas, images, denoiser)
            try:
                ts = masker.fit_transform(images.bold, confounds=confounds, sample_mask=sample_mask)
            except Exception as exc:
                raise InputError(f"{images.bold}: region extraction failed: {type(exc).__name__}: {exc}") from exc
            ts = _in_atlas_order(ts, masker, atlas, images.bold)
            _check_timeseries(ts, atlas, images.bold)
    if too_few is not None:
        too_few.warnings = said + extracting
        return too_few
    n_kept = ts.shape[0]
    path = ""
    if cache_dir:
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(tsv, pd.DataFrame(ts, columns=atlas.labels).to_csv(sep="\t", index=False, float_format="%.8g"))
        write_text_atomic(sidecar, json.dumps({
            "scan_id": scan_id, "n_volumes": n_volumes, "n_kept": n_kept, "denoiser": denoiser.name,
            "denoiser_params": denoiser.params(), "signal": denoiser.signal_kwargs(), "atlas": atlas.name,
            "bold": images.bold, "confounds": images.confounds, "key": key,
            "warnings": [list(w) for w in extracting],
        }, indent=2, default=str))
        path = str(tsv)
    return Extracted(scan_id, ts, n_volumes, n_kept, False, path, warnings=said + extracting)


def denoise_timeseries(scan_id: str, timeseries: np.ndarray, bold_name: str, denoiser: Denoiser,
                       t_r: float) -> Extracted:
    """Clean raw region timeseries with the denoiser's confounds and sample mask, as nilearn's
    maskers clean region signals after averaging (same ``signal.clean`` call and arguments)."""
    from nilearn.signal import clean

    ts = np.asarray(timeseries, dtype=float)
    if ts.ndim != 2 or not np.all(np.isfinite(ts)):
        raise InputError(f"timeseries of scan '{scan_id}' must be a finite (volumes x regions) array to be "
                         f"denoised; got shape {ts.shape}{'' if ts.ndim != 2 else ' with NaN or inf'}")
    n_volumes = ts.shape[0]
    confounds, sample_mask, too_few = denoiser_confounds(scan_id, bold_name, denoiser, n_volumes, "denoised")
    if too_few is not None:
        return too_few
    kwargs = {"detrend": False, "standardize": False, **denoiser.signal_kwargs()}
    if kwargs.get("standardize") is None:
        kwargs["standardize"] = False
    try:
        cleaned = clean(ts, confounds=None if confounds is None else np.asarray(confounds, dtype=float),
                        sample_mask=sample_mask, t_r=t_r, **kwargs)
    except ValueError as exc:  # nilearn: e.g. a sample mask beyond the data, a rank-deficient design
        raise InputError(f"scan '{scan_id}': denoising with the confounds of {bold_name} failed: {exc}") from exc
    return Extracted(scan_id, cleaned, n_volumes, int(cleaned.shape[0]), False, "")


def _in_atlas_order(ts: np.ndarray, masker, atlas: Atlas, bold: str) -> np.ndarray:
    if atlas.maps is None:
        return ts
    ids = getattr(masker, "region_ids_", None)
    if ids is None:
        return ts
    col_of = {int(v): int(k) for k, v in ids.items() if k != "background"}
    missing = [lab for lab, idx in zip(atlas.labels, atlas.regions["index"]) if int(idx) not in col_of]
    if missing:
        raise InputError(
            f"{bold}: atlas '{atlas.name}' region(s) {missing[:5]} are empty in this image "
            "(outside the brain mask or field of view after resampling)"
        )
    return ts[:, [col_of[int(i)] for i in atlas.regions["index"]]]


def _check_timeseries(ts: np.ndarray, atlas: Atlas, source: str) -> None:
    if not np.all(np.isfinite(ts)):
        cols = np.flatnonzero(~np.isfinite(ts).all(axis=0))
        raise InputError(f"{source}: NaN or inf in the timeseries of region(s) {[atlas.labels[i] for i in cols[:5]]}")
    flat = np.flatnonzero(np.ptp(ts, axis=0) == 0) if len(ts) else np.arange(ts.shape[1])
    if len(flat):
        raise InputError(f"{source}: constant (empty?) timeseries in region(s) {[atlas.labels[i] for i in flat[:5]]}")


def bold_space(image: ScanImages) -> str | None:
    """The BOLD's template space: the ``space-`` entity of its file name, else of its entities."""
    m = re.search(r"(?:^|_)space-([A-Za-z0-9]+)(?=_|\.)", Path(image.bold).name)
    return m.group(1) if m else (image.entities.get("space") or None)


def check_spaces(images: dict[str, ScanImages], scan_ids: list[str], atlas: Atlas,
                 on_mismatch: str = "error") -> None:
    """Refuse BOLD in a known space other than the atlas's known space.

    MNI152NLin6Asym and MNI152NLin2009cAsym overlap almost everywhere, so the field-of-view check
    cannot tell them apart, yet they differ by a few mm: enough to mix small subcortical regions.
    """
    if not atlas.space:
        return
    for s in scan_ids:
        space = bold_space(images[s])
        if not space or space == atlas.space:
            continue
        if on_mismatch == "warn":
            log.warning("%s: BOLD in space %s, atlas '%s' in space %s; extracting anyway "
                        "(extraction.space_mismatch=warn)", images[s].bold, space, atlas.name, atlas.space)
        else:
            raise InputError(
                f"{images[s].bold}: this BOLD is in space {space} but atlas '{atlas.name}' is in space "
                f"{atlas.space}. Use BOLD in the atlas's space (fMRIPrep --output-spaces {atlas.space}, then "
                f"dataset.space={atlas.space}) or the atlas in the BOLD's space (atlas.source=templateflow "
                f"atlas.template={space}; for an atlas made of parts, atlas.<part>.source=templateflow "
                f"atlas.<part>.template={space} for every part), "
                "or accept the difference with extraction.space_mismatch=warn"
            )


def check_field_of_view(images: dict[str, ScanImages], scan_ids: list[str], atlas: Atlas,
                        space_mismatch: str = "error") -> None:
    """Refuse BOLD images in another space than the atlas, or missing most of it, before
    anything is extracted.

    A BOLD in another space than the atlas, or with a broken affine, otherwise fails minutes
    later inside nilearn with a message that does not mention spaces.
    """
    import nibabel as nib

    check_spaces(images, scan_ids, atlas, space_mismatch)
    centres = atlas.centroids()
    if centres is None:
        return
    centres = centres[np.isfinite(centres).all(axis=1)]
    seen: set[tuple] = set()
    for s in scan_ids:
        try:
            header = nib.load(images[s].bold).header
        except Exception:  # unreadable files are reported by extraction with their own message
            continue
        shape, affine = tuple(int(v) for v in header.get_data_shape()[:3]), header.get_best_affine()
        key = (shape, np.round(affine, 4).tobytes())
        if key in seen:
            continue
        seen.add(key)
        vox = nib.affines.apply_affine(np.linalg.inv(affine), centres)
        inside = np.all((vox > -0.5) & (vox < np.array(shape) - 0.5), axis=1)
        if inside.mean() >= 0.5:
            continue
        corners = nib.affines.apply_affine(affine, np.array([[0, 0, 0], np.array(shape) - 1]))
        span = ", ".join(f"{ax} {lo:.0f}..{hi:.0f}" for ax, lo, hi in zip("xyz", corners.min(0), corners.max(0)))
        a_span = ", ".join(f"{ax} {lo:.0f}..{hi:.0f}" for ax, lo, hi in zip("xyz", centres.min(0), centres.max(0)))
        space = images[s].entities.get("space")
        raise InputError(
            f"{images[s].bold}: only {int(inside.sum())} of {len(centres)} region centres of atlas '{atlas.name}' "
            f"lie inside this image's field of view (image: {span} mm; atlas regions: {a_span} mm). The BOLD"
            f"{f' (space-{space})' if space else ''} and the atlas are probably in different spaces, or the "
            "image's affine is wrong: use BOLD in the atlas's space (fMRIPrep's --output-spaces) or an atlas in "
            "the BOLD's space"
        )


def shard_of(scan_ids: list[str], shard: int, shards: int) -> list[str]:
    """Shard ``shard`` of ``shards``: every shards-th scan id in sorted order, starting at
    ``shard``, so shards are balanced and every scan is in exactly one, whatever the order given."""
    return sorted(scan_ids)[shard::shards]


def extract_all(images: dict[str, ScanImages], scan_ids: list[str], atlas: Atlas, denoiser: Denoiser,
                cache_dir: str | None, n_jobs: int = 1, space_mismatch: str = "error") -> dict[str, Extracted]:
    """Extract every scan (in parallel with joblib), logging progress as scans finish."""
    from joblib import Parallel, delayed

    check_field_of_view(images, scan_ids, atlas, space_mismatch)
    atlas_fp = atlas_fingerprint(atlas)
    jobs = (delayed(extract_scan)(s, images[s], atlas, denoiser, cache_dir, atlas_fp) for s in scan_ids)
    out: dict[str, Extracted] = {}
    step = max(1, len(scan_ids) // 10)
    for i, res in enumerate(Parallel(n_jobs=n_jobs, return_as="generator")(jobs)):
        out[res.scan_id] = res
        if (i + 1) % step == 0 or i + 1 == len(scan_ids):
            log.info("extraction: %d/%d scans (%d from cache)", i + 1, len(scan_ids), sum(r.cached for r in out.values()))
    log_warnings(out, len(scan_ids))
    return out


def log_warnings(extracted: dict[str, Extracted], n_scans: int) -> None:
    """The scans' warnings as the run's: once per message with the scans that raised it, at most
    MAX_FROM_ONE_PLACE messages from one line of code (a message naming its file differs for
    every scan), then a count."""
    by_place: dict[str, dict[Raised, list[str]]] = {}
    for res in extracted.values():
        for w in dict.fromkeys(res.warnings):
            by_place.setdefault(w.place, {}).setdefault(w, []).append(res.scan_id)

    def scans_text(scans: list[str]) -> str:
        return scans[0] if len(scans) == 1 else (f"{len(scans)} of {n_scans} scans: {', '.join(sorted(scans)[:5])}"
                                                 f"{', ...' if len(scans) > 5 else ''}")

    for place, said in by_place.items():
        shown = list(said.items())
        for w, scans in shown[:MAX_FROM_ONE_PLACE]:
            log.warning("extraction: %s (%s)", w, scans_text(scans))
        if len(shown) > MAX_FROM_ONE_PLACE:
            rest = sorted({s for _, scans in shown[MAX_FROM_ONE_PLACE:] for s in scans})
            log.warning("extraction: %s (%s)", more_like(len(shown) - MAX_FROM_ONE_PLACE, place), scans_text(rest))
