"""Converters from public lab hand-motion data sets (their documented on-disk layouts), and from your own captures in
a generic per-clip format (``custom``), to :class:`SourceClip`.

Every converter is ``iter_clips(root, mano_dir, *, min_seconds=1.0, max_seconds=10.0, target_fps=15.0, ...)`` and
streams :class:`~datasets_unihand_mix.sources.SourceClip` objects; each module's docstring records the layout it reads,
where that layout is documented, the source's license and the MANO conventions it converts from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..sources import SourceClip
from . import arctic, custom, dexycb, hot3d, hot3d_sequences

Converter = Callable[..., Iterator[SourceClip]]

CONVERTERS: dict[str, Converter] = {
    "arctic": arctic.iter_clips,
    "dexycb": dexycb.iter_clips,
    "hot3d": hot3d.iter_clips,
    "hot3d_sequences": hot3d_sequences.iter_clips,
    "custom": custom.iter_clips,
}


def get_converter(name: str) -> Converter:
    """The ``iter_clips`` of source ``name``; a ValueError lists the known names otherwise."""
    try:
        return CONVERTERS[name]
    except KeyError:
        raise ValueError(f"unknown UniHand-Mix source {name!r}; known sources: {sorted(CONVERTERS)}") from None
