"""The service core that the API and the workers share.

Settings, names and errors; the job store (``jobs``) and its migrations; blob stores
(``blobs``: local directory, S3); the broker and queue publishing (``broker``, ``runtime``,
``followups``); the webhook URL rule (``webhooks``); logs, metrics, the reconciler and process
bounds. It never imports ``api``, ``tasks`` or ``earshot``, nor the analysis stack.
"""
