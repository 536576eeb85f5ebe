"""The ``combined`` atlas: cortical + subcortical + cerebellar label-image atlases in one image.

Each part is any installed label-image atlas plugin, configured by a mapping with its ``name``
and its own config keys, e.g. on the command line::

    megafc atlas=combined atlas.cortical.n_rois=200 \\
        'atlas.subcortical={name: tian, image: /a/Tian_Subcortex_S1_3T.nii, labels: /a/Tian_Subcortex_S1_3T_label.txt}' \\
        'atlas.cerebellar={name: cerebellum, image: /a/Buckner.nii.gz, labels: /a/Buckner_ColorLUT.txt}'

Hydra merges a mapping given on the command line into the default (``{name: schaefer}``), so
``'atlas.cortical={name: yeo, n_networks: 17}'`` switches the cortical plugin.

Parts are stacked in the order cortical, subcortical, cerebellar (parts set to ``{}`` or null are
skipped; at least two are needed). Every part is resampled to the first part's grid with nearest-neighbour
interpolation; its label values are shifted by the largest value of the parts before it (so
a 400-parcel cortex keeps 1-400 and a 16-region subcortex becomes 401-416). Voxels labelled by
two parts are an error (``overlap: error``) or keep the earlier part's label (``first``).
Regions left without voxels (by resampling to a coarser grid, or under ``first``) are dropped
with a warning. The merged image is written to ``cache_dir`` as
``combined_<content hash>.nii.gz`` with the region table next to it.

Parts must be in one template space: the merged atlas's ``space`` is the space the parts
name (parts of unknown space, e.g. local files without ``space``, are trusted to match it), and
parts in two different known spaces are an error, as resampling does not change a space. With
TemplateFlow all parts can come from the same template, e.g.::

    megafc atlas=combined 'atlas.cortical={name: schaefer, source: templateflow, template: MNI152NLin6Asym}' \
        'atlas.subcortical={name: tian, source: templateflow, template: MNI152NLin6Asym, scale: 2}'
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import pandas as pd

from megafc.core import Atlas, AtlasLoader, Choice, ConfigError, InputError

from ._files import load_label_image, write_atomic

PARTS = ("cortical", "subcortical", "cerebellar")


class Overlap(Choice):
    """atlas.overlap: voxels two parts label are an error, or the earlier part's."""

    error = "error"
    first = "first"


class CombinedAtlas(AtlasLoader):
    """Cortical + subcortical + cerebellar label-image atlases merged into one label image."""

    name = "combined"

    @dataclass
    class Config:
        #: Cortical part: {name: <atlas plugin>, <its config keys>...}; {} or null: none.
        cortical: Optional[Dict[str, Any]] = field(default_factory=lambda: {"name": "schaefer"})
        #: Subcortical part, e.g. {name: tian, image: ..., labels: ...}; {} or null: none.
        subcortical: Optional[Dict[str, Any]] = field(default_factory=dict)
        #: Cerebellar part, e.g. {name: cerebellum, image: ..., labels: ...}; {} or null: none.
        cerebellar: Optional[Dict[str, Any]] = field(default_factory=dict)
        #: Voxels labelled by two parts: "error", or "first" (the earlier part keeps them).
        overlap: Overlap = Overlap.error
        #: Where the merged label image is written (named by a hash of its content).
        cache_dir: str = "~/.cache/megafc/atlases"

    @classmethod
    def from_config(cls, config: Any, registry: Any) -> "CombinedAtlas":
        return cls(config, registry=registry)

    def __init__(self, config=None, registry=None):
        super().__init__(config)
        if registry is None:  # built directly, not by a registry: the installed plugins
            from megafc.core.registry import default_registry

            registry = default_registry()
        c = self.config
        self.parts: list[tuple[str, AtlasLoader]] = []
        for part in PARTS:
            node = getattr(c, part)
            if not node:  # None or {}: part not used
                continue
            self.parts.append((part, _instantiate(part, node, registry)))
        if len(self.parts) < 2:
            raise ConfigError(
                "config keys 'atlas.cortical', 'atlas.subcortical', 'atlas.cerebellar': the combined "
                f"atlas needs at least two parts, got {[p for p, _ in self.parts] or 'none'}; e.g. set "
                "atlas.subcortical={name: tian, image: <file>, labels: <file>}"
            )

    def load(self) -> Atlas:
        import nibabel as nib
        from nilearn.image import resample_to_img

        c = self.config
        what = f"atlas '{self.name}'"
        ref_img = merged = owner = None
        tables, descriptions, references = [], [], []
        spaces: dict[str, tuple[str, str]] = {}  # space -> (part, plugin) that named it first
        offset = 0
        for k, (part, loader) in enumerate(self.parts):
            try:
                atlas = loader.load()
            except InputError as exc:  # its advice names the part's keys: atlas.<part>.data_dir
                raise InputError(_retarget(str(exc), part, loader)) from exc
            space = getattr(atlas, "space", None)
            if space and spaces and space not in spaces:
                (other, (o_part, o_name)), = spaces.items()
                raise InputError(
                    f"{what}: part '{part}' ({loader.name}) is in space {space} but part '{o_part}' "
                    f"({o_name}) is in space {other}; use parts in one template space, e.g. "
                    f"atlas.{part}.source=templateflow atlas.{part}.template={other} (and the same "
                    "source and template for every part)"
                )
            if space:
                spaces.setdefault(space, (part, loader.name))
            if atlas.maps is None:
                raise ConfigError(
                    f"config key 'atlas.{part}': atlas '{loader.name}' has no label image (a coordinate "
                    "atlas?); the combined atlas merges label-image atlases only"
                )
            img, data = load_label_image(atlas.maps, f"{what}, part '{part}' ({loader.name})")
            if ref_img is None:
                ref_img = img
                merged = np.zeros(data.shape, dtype=np.int64)
                owner = np.full(data.shape, -1, dtype=np.int64)
            elif data.shape != ref_img.shape or not np.allclose(img.affine, ref_img.affine):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    img = resample_to_img(img, ref_img, interpolation="nearest", force_resample=True, copy_header=True)
                data = np.rint(np.asanyarray(img.dataobj)).astype(np.int64)
            inside = data > 0
            clash = inside & (merged > 0)
            if clash.any():
                others = sorted(set(owner[clash].tolist()))
                names = " and ".join(f"'{self.parts[o][0]}' ({self.parts[o][1].name})" for o in others)
                if c.overlap == "error":
                    raise InputError(
                        f"{what}: {int(clash.sum())} voxels are labelled both by part '{part}' "
                        f"({loader.name}) and by part {names}; set atlas.overlap=first to give them "
                        "to the earlier part, or use images that do not overlap"
                    )
                inside &= ~clash
            merged[inside] = data[inside] + offset
            owner[inside] = k
            regions = atlas.regions.copy()
            regions["index"] = regions["index"].astype(int) + offset
            regions["part"] = part
            tables.append(regions)
            descriptions.append(atlas.description.rstrip("."))
            references += [r for r in atlas.references if r not in references]
            offset += int(atlas.regions["index"].max())
        regions = pd.concat(tables, ignore_index=True)
        if "hemisphere" not in regions.columns:
            regions["hemisphere"] = ""
        text_cols = [col for col in regions.columns if regions[col].dtype == object]
        regions[text_cols] = regions[text_cols].fillna("")
        dup = regions["label"][regions["label"].duplicated()]
        if len(dup):
            raise InputError(
                f"{what}: region label(s) {sorted(set(dup))[:5]} occur in more than one part "
                f"({', '.join(sorted(set(regions.loc[regions['label'].isin(dup), 'part'])))})"
            )
        present = set(np.unique(merged).tolist())
        lost = regions[~regions["index"].isin(present)]
        dropped = ""
        if len(lost):  # said in warnings.tsv and in the atlas's own description (methods.md)
            per_part = lost.groupby("part", sort=False).size()
            dropped = (f"; {len(lost)} region(s) dropped, with no voxels left where parts overlap ("
                       + ", ".join(f"{n} of part '{part}'" for part, n in per_part.items()) + ")")
            logging.getLogger("megafc").warning(
                "%s: %d region(s) have no voxels left in the merged image (atlas.overlap=%s) and are dropped: %s",
                what, len(lost), c.overlap, list(lost["label"])[:10])
            regions = regions[regions["index"].isin(present)]
        regions = regions.sort_values("index", kind="stable").reset_index(drop=True)

        out = merged.astype(np.int32)
        digest = hashlib.sha256()
        digest.update(out.tobytes())
        digest.update(np.asarray(ref_img.affine, dtype=np.float64).tobytes())
        digest.update(str(out.shape).encode())
        digest.update(regions[["index", "label"]].to_csv(index=False).encode())
        stem = f"combined_{digest.hexdigest()[:16]}"
        cache = Path(c.cache_dir).expanduser()
        path = cache / f"{stem}.nii.gz"
        try:
            if not path.exists():
                image = nib.Nifti1Image(out, ref_img.affine)
                image.header.set_data_dtype(np.int32)
                write_atomic(path, lambda p: nib.save(image, str(p)))
            table = cache / f"{stem}.tsv"
            if not table.exists():
                write_atomic(table, lambda p: regions.to_csv(p, sep="\t", index=False))
        except OSError as exc:
            raise InputError(
                f"{what}: cannot write the merged image to '{cache}' (config key 'atlas.cache_dir'): {exc}"
            ) from exc
        return Atlas(
            name=self.name,
            regions=regions,
            maps=str(path),
            description="Combined atlas: " + "; ".join(descriptions) + f" (merged on the first part's grid{dropped}).",
            references=references,
            space=next(iter(spaces), None),
        )


def _instantiate(part: str, node: Any, registry: Any) -> AtlasLoader:
    """Build one part's plugin from ``registry``; config errors name the key inside ``atlas.<part>``."""
    from omegaconf import DictConfig, OmegaConf

    values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    if not values.get("name"):
        raise ConfigError(f"config key 'atlas.{part}.name' is missing (which atlas plugin to use for the {part} part)")
    if values["name"] == CombinedAtlas.name:
        raise ConfigError(f"config key 'atlas.{part}.name': a combined atlas cannot be a part of itself")
    try:
        return registry.instantiate("atlas", values)
    except ConfigError as exc:
        msg = str(exc).replace("config key 'atlas': ", "").replace("config key 'atlas.", f"config key 'atlas.{part}.")
        if f"'atlas.{part}" not in msg:
            msg = f"config key 'atlas.{part}.name': {msg}"
        raise ConfigError(msg) from exc


def _retarget(message: str, part: str, loader: AtlasLoader) -> str:
    """Point ``atlas.<key>`` mentions of a part's config keys at ``atlas.<part>.<key>``."""
    keys = "|".join(re.escape(f.name) for f in dataclasses.fields(loader.Config))
    if not keys:
        return message
    return re.sub(rf"(?<=[\s'(])atlas\.(?=(?:{keys})\b)", f"atlas.{part}.", message)
