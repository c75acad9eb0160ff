"""The analyzer version, alone in a module so that it can be read without importing librosa.

Bump it whenever a number in the result document can change for the same input: results are
cached and compared by it.
"""

ANALYZER_VERSION = "1.2.0"
