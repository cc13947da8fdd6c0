FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PORT=3007
WORKDIR /app

# The runtime requirements only: no test tools and no embedded PostgreSQL (pgserver is in
# requirements-dev.txt), so the container needs DATABASE_URL and says so without it.
# .dockerignore keeps everything else (.venv, .data, tests, bench, .git) out of the build context.
COPY requirements.txt .
RUN pip install --no-cache-dir --disable-pip-version-check --require-hashes -r requirements.txt

COPY wsgi.py gunicorn.conf.py ./
COPY admin_service ./admin_service
COPY openapi ./openapi

RUN useradd --system --uid 10001 --no-create-home app
USER app

EXPOSE 3007
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import os,urllib.request,sys; sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/health/ready', timeout=2).status != 200)"

# DATABASE_URL and JWT_SECRET (or JWT_PUBLIC_KEY) are required in a container. gunicorn starts
# one worker per CPU the container may use (its cgroup quota), at least 2; WEB_CONCURRENCY overrides.
# Migrating first is safe with several replicas: an advisory lock serialises them.
CMD ["sh", "-c", "python -m admin_service db upgrade && exec gunicorn -c gunicorn.conf.py wsgi:app"]
