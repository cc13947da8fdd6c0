"""Live events: capture job changes into the event log, tail it, fan out to subscribers.

    archive.analysis_jobs --(capture, one leader)--> admin.job_events --(tail, every worker)--> hub --> SSE / Socket.IO

Written with threading/queue/select: under gunicorn's gevent worker these are
monkey-patched into greenlets, and the same code runs in plain threads elsewhere.
"""
