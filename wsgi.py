"""The app for gunicorn: `gunicorn -c gunicorn.conf.py wsgi:app`."""

from admin_service import create_app

app = create_app()
