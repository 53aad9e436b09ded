"""Which decoder model decodes: the one precedence rule, as a value handed down to the decoder.

``--decoder-model FILE`` (or ``none``: no learned decoder) > the model a snapshot carries (or the one
beside the archive being decoded) > ``$ELECTROGAN_DECODER_MODEL`` (``''`` or ``none``: no model) > the
shipped model. :func:`choose_decoder_model` applies it once, in the command line or library entry
point; the result, a :class:`DecoderChoice`, travels as an argument through
:func:`audio_ext.decoder.methods.decode_audio` to the learned method. Nothing is kept in module state,
so two choices can be used side by side in one process.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from audio_ext.core.geometry import StftGeometry
from audio_ext.decoder import frame_model
from audio_ext.decoder.frame_model import DecoderModel, ModelError
from audio_ext.decoder.model_file import check_model_payload, load_decoder_model

#: Where a model comes from, as the page and file tags say it. SOURCE_ARCHIVE: ``<stem>.decoder.pt``
#: beside the archive being decoded (audio_ext.decoder.archive_model); it ranks where a snapshot's model does.
SOURCE_FILE, SOURCE_SNAPSHOT, SOURCE_ARCHIVE, SOURCE_SHIPPED = "file", "snapshot", "archive", "shipped"
#: ``--decoder-model`` / ``$ELECTROGAN_DECODER_MODEL`` value that turns the learned decoder off.
NO_MODEL = "none"


def is_no_model(value: Any) -> bool:
    """True for the value that means "no decoder model" (``'none'``, any case, surrounding blanks ignored)."""
    return isinstance(value, (str, Path)) and str(value).strip().lower() == NO_MODEL


@functools.lru_cache(maxsize=4)
def _load_cached(path: str) -> DecoderModel:
    return load_decoder_model(path)


@dataclasses.dataclass(frozen=True)
class DecoderChoice:
    """The decoder model chosen for one run, or none.

    ``source`` is one of the ``SOURCE_*`` names (None: no model); ``label`` is how pages and tags name
    it (``'file: m.pt'``, ``'snapshot: network-snapshot-000200.pkl'``, ``'archive: stft.decoder.pt'``,
    ``'shipped: frame_interp_r1024_h1024.pt'``). A file is read on first use (``path``); a snapshot's or
    an archive's model is already in memory (``loaded``). ``turned_off``: ``none`` was asked for on the
    command line, so asking for the learned method is an error rather than a missing model.
    """

    source: Optional[str] = None
    label: Optional[str] = None
    path: Optional[str] = None
    loaded: Optional[DecoderModel] = dataclasses.field(default=None, compare=False, repr=False)
    turned_off: bool = False

    def model(self) -> Optional[DecoderModel]:
        """The model (read from ``path`` the first time; cached per file), or None when there is none."""
        if self.loaded is not None:
            return self.loaded
        return _load_cached(self.path) if self.path is not None else None

    def model_for(self, geometry: StftGeometry) -> DecoderModel:
        """The model for ``geometry``; ModelError (one line) when there is none or it does not fit."""
        model = self.model()
        if model is None and self.turned_off:
            raise ModelError("the learned decoder is turned off (decoder model 'none'); pick a classic --method")
        if model is None:
            raise ModelError(f"no decoder model available (none shipped at {frame_model.DEFAULT_MODEL_PATH} and "
                             f"${frame_model.MODEL_ENV} unset); train one with `python -m audio_ext train-decoder`")
        model.check(geometry)
        return model

    def available_for(self, geometry: StftGeometry) -> bool:
        """True when a model is chosen and fits ``geometry``. A chosen file that cannot be read (a wrong
        ``$ELECTROGAN_DECODER_MODEL``) raises ModelError instead of being passed over silently."""
        model = self.model()
        if model is None:
            return False
        try:
            model.check(geometry)
        except ModelError:
            return False
        return True


def _file_choice(path: Union[str, Path]) -> DecoderChoice:
    resolved = str(Path(path).resolve())
    return DecoderChoice(SOURCE_FILE, f"{SOURCE_FILE}: {Path(resolved).name}", path=resolved)


def choose_decoder_model(flag: Optional[Union[str, Path]] = None, carried: Optional[Mapping[str, Any]] = None,
                         where: str = "snapshot", source: str = SOURCE_SNAPSHOT,
                         fallback: bool = True) -> DecoderChoice:
    """Apply the precedence flag > carried > ``$ELECTROGAN_DECODER_MODEL`` > shipped.

    ``flag``: ``--decoder-model`` (a file, read at once so a bad path fails here with a one-line
    ModelError; ``'none'``: no model). ``carried``: a model file's dict that a snapshot carries (its
    ``decoder_model`` key) or that was read from beside an archive (``source=SOURCE_ARCHIVE``, ``where``
    its path); ``where`` names it in messages and labels. ``fallback=False`` stops after the carried
    model (what a snapshot stores: never the environment's or the shipped one).
    """
    if flag is not None:
        if is_no_model(flag):
            return DecoderChoice(turned_off=True)
        choice = _file_choice(flag)
        choice.model()
        return choice
    if carried is not None:
        if source == SOURCE_ARCHIVE:
            name, shown = str(where), Path(str(where)).name
        else:
            name, shown = f"{where}:decoder_model", str(where)
        return DecoderChoice(source, f"{source}: {shown}", loaded=DecoderModel(check_model_payload(carried, name), name))
    if not fallback:
        return DecoderChoice()
    env = os.environ.get(frame_model.MODEL_ENV)
    if env is not None:
        if env.strip() == "" or is_no_model(env):
            return DecoderChoice()
        return _file_choice(env)
    shipped = frame_model.DEFAULT_MODEL_PATH
    if shipped.is_file():
        return DecoderChoice(SOURCE_SHIPPED, f"{SOURCE_SHIPPED}: {shipped.name}", path=str(shipped))
    return DecoderChoice()
