"""The core's pixel decoding and transcoding (overridable): pydicom's decoders and
encoders, with pylibjpeg, pyjpegls and python-gdcm behind them, and Pillow for JPEG."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydicom.pixels import get_decoder

from ..config import ConfigError
from ..errors import BadRequest
from ..plugins import hookimpl
from ..transcode import check_syntax, default_transcode

if TYPE_CHECKING:
    import numpy as np
    from pydicom.dataset import Dataset

    from ..server import Server


@hookimpl
def startup(server: Server) -> None:
    """A mistyped transfer syntax option stops start-up rather than every ingest or send."""
    for option in ("IngestTranscoding", "DicomScuPreferredTransferSyntax"):
        if server.config[option]:
            try:
                check_syntax(server.config[option])
            except BadRequest as exc:
                raise ConfigError(f"{option}: {exc.message}") from None


@hookimpl(trylast=True)
def decode_frame(server: Server, instance: Dataset, frame: int) -> np.ndarray | None:
    try:
        decoder = get_decoder(instance.file_meta.TransferSyntaxUID)
    except NotImplementedError:  # pydicom knows no decoder for this syntax
        return None
    if not decoder.is_available:
        return None
    pixels, _ = decoder.as_array(instance, index=frame, as_rgb=True)
    return pixels


@hookimpl(trylast=True)
def transcode(server: Server, instance: Dataset, syntaxes: list[str]) -> bytes | None:
    return default_transcode(server, instance, syntaxes)
