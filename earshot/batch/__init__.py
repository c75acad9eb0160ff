"""The batch behind ``earshot submit``, built on :class:`earshot.client.Client`.

``discover.py`` picks the inputs, ``engine.py`` runs each through upload → wait → download,
``manifest.py`` records what happened (so a second run resumes), ``summary.py`` writes
``summary.csv`` and ``progress.py`` tells the user. The command line is earshot/submit_cmd.py.
"""
