"""Citations: each plugin class declares its own (``references``), an atlas and a pooling result
may add theirs, and the run collects them into provenance.json, methods.md and references.bib.

A reference is one line in the usual style, ``Authors (Year) Title. Journal Volume:Pages``,
which is how it reads in methods.md and the report; references.bib is parsed from it (an entry
that does not follow the style becomes a ``@misc`` with the whole line as its note).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Iterable

#: What core itself relies on, cited by every run: megafc, the study it reproduces, nilearn
#: (extraction and connectivity) and the QC-FC benchmark (qc_fc.tsv).
CORE_REFERENCES: tuple[str, ...] = (
    "Girn et al. (2026) Nat Med 32:1543-1554 (the multi-site mega-analysis megafc reproduces)",
    "Abraham A, Pedregosa F, Eickenberg M, Gervais P, Mueller A, Kossaifi J, Gramfort A, Thirion B, Varoquaux G "
    "(2014) Machine learning for neuroimaging with scikit-learn. Front Neuroinform 8:14",
    "Power JD, Mitra A, Laumann TO, Snyder AZ, Schlaggar BL, Petersen SE (2014) Methods to detect, characterize, "
    "and remove motion artifact in resting state fMRI. NeuroImage 84:320-341",
)


def software_reference(version: str) -> str:
    return (f"megafc {version}: multi-site Bayesian mega-analysis of resting-state functional connectivity "
            "(software).")


def plugin_references(plugin: Any) -> list[str]:
    """A plugin's declared references: the class attribute ``references`` (a list of strings),
    or, as plugins of earlier versions wrote it, a method returning one."""
    refs = getattr(plugin, "references", ())
    if callable(refs):
        refs = refs()
    return [str(r) for r in refs or ()]


def unique(refs: Iterable[str]) -> list[str]:
    """In order of first mention, each once."""
    return list(dict.fromkeys(r.strip() for r in refs if r and r.strip()))


_STYLE = re.compile(r"^(?P<authors>.+?) \((?P<year>\d{4})\) (?P<title>.+?)\. (?P<journal>[^.]+?) "
                    r"(?P<volume>[\w()]+):(?P<pages>[\w-]+)\.?$")


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


def _bib_authors(authors: str) -> str:
    names = [a.strip() for a in authors.split(",") if a.strip()]
    out = []
    for name in names:
        if name.rstrip(".").lower() == "et al":
            out.append("others")
            continue
        parts = name.split()
        if len(parts) > 1 and parts[-1].isupper():  # "Yeo BTT": surname, then initials
            out.append(f"{' '.join(parts[:-1])}, {' '.join(c + '.' for c in parts[-1])}")
        else:
            out.append(name)
    return " and ".join(out)


def _latex(text: str) -> str:
    """Characters BibTeX passes to LaTeX that LaTeX would read as commands."""
    return re.sub(r"([&%$#_])", r"\\\1", text)


def bibtex_entry(ref: str, key: str) -> str:
    """One BibTeX entry for a reference line (``@article`` when it follows the style)."""
    esc = ref.replace("{", "").replace("}", "")
    m = _STYLE.match(esc)
    if not m:
        return f"@misc{{{key},\n  note = {{{_latex(esc)}}}\n}}"
    fields = {"author": _latex(_bib_authors(m["authors"])), "year": m["year"], "title": f"{{{_latex(m['title'])}}}",
              "journal": _latex(m["journal"]), "volume": m["volume"], "pages": m["pages"].replace("-", "--")}
    body = ",\n".join(f"  {k} = {{{v}}}" for k, v in fields.items())
    return f"@article{{{key},\n{body}\n}}"


def bibtex_key(ref: str) -> str:
    """``Surname`` + year (``megafc`` for the software), ASCII letters and digits only."""
    first = re.split(r"[ ,(]", ref.strip(), maxsplit=1)[0]
    year = re.search(r"\((\d{4})\)", ref)
    return re.sub(r"[^A-Za-z0-9]", "", _ascii(first)) + (year.group(1) if year else "")


def to_bibtex(refs: Iterable[str]) -> str:
    """references.bib: one entry per reference, keys made unique with a, b, ... suffixes."""
    entries, seen = [], {}
    for ref in unique(refs):
        key = bibtex_key(ref) or "ref"
        n = seen.get(key, 0)
        seen[key] = n + 1
        entries.append(bibtex_entry(ref, key + ("" if n == 0 else chr(ord("a") + n - 1))))
    return "\n\n".join(entries) + "\n"
