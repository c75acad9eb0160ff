"""The analysis profiles: the one place their names and parameters are defined.

Imports nothing heavy (no numpy, no librosa), so the API, the CLI's argument parser and the
job store can take the names from here without loading the analysis stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from analysis.errors import UnknownProfile


@dataclass(frozen=True)
class Profile:
    """Analysis parameters of one named profile.

    Attributes
    ----------
    sr : int
        Sample rate of the analysis signal in Hz.
    n_fft, hop_length : int
        STFT frame and hop in samples at ``sr``.
    n_mels : int
        Mel bands (MFCC and the onset envelope).
    """

    sr: int
    n_fft: int
    hop_length: int
    n_mels: int


PROFILE_PARAMS = MappingProxyType(
    {
        # librosa's conventions.
        "standard": Profile(sr=22050, n_fft=2048, hop_length=512, n_mels=128),
        # Half the frames and mel bands: roughly half the feature cost, coarser beat times.
        "fast": Profile(sr=22050, n_fft=2048, hop_length=1024, n_mels=64),
    }
)
PROFILES: tuple[str, ...] = tuple(PROFILE_PARAMS)
DEFAULT_PROFILE = "standard"


def get_profile(name: str) -> Profile:
    """The parameters of profile ``name``.

    Raises
    ------
    UnknownProfile
        When ``name`` is not one of ``PROFILES``.
    """
    try:
        return PROFILE_PARAMS[name]
    except KeyError:
        raise UnknownProfile(
            f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}"
        ) from None
