"""One line per perceptual score naming its method, for whoever shows the scores.

A light leaf (no imports): the API's Spotify-shaped views quote it without loading the
analysis stack that ``analysis.perceptual`` (which re-exports it) needs. docs/result.md,
"Perceptual scores", has the definitions in full.
"""

SCORE_METHODS: dict[str, str] = {
    "energy": "DSP: integrated loudness (BS.1770), spectral flux and spectral centroid, "
    "weighted 0.5 / 0.3 / 0.2",
    "danceability": "DSP: beat strength (onset autocorrelation at the beat period, weighted "
    "by closeness to 120 BPM) and the regularity of the RMS envelope by detrended "
    "fluctuation analysis (after Streich & Herrera 2005), geometric mean",
    "valence": "DSP heuristic: major-versus-minor key-profile correlation, tempo and "
    "brightness, weighted 0.6 / 0.2 / 0.2; null without tonal evidence or with speech",
    "acousticness": "DSP: peak-to-loudness ratio, loudness range and spectral roll-off, "
    "mean, scaled down by clipped samples (distortion)",
    "instrumentalness": "DSP: 1 - speechiness when speech is found (speechiness >= 0.5); "
    "null otherwise (earshot has no sung-voice detector)",
    "speechiness": "DSP: chroma instability over 0.1 s times the MFCC change rate over "
    "46 ms (voice-like articulation without held pitches)",
    "liveness": "DSP: seconds of sustained (>= 1 s), fluctuating, unpitched broadband noise "
    "without a beat, near the music's level (audience: applause, crowd), 10 s or more "
    "reads 1.0",
}
