"""The app for gunicorn: `gunicorn -c gunicorn.conf.py wsgi:app`.

Imported in each worker after the fork (no preload), so every worker starts its own live
loops: the event-log tail, the stats ticker, and a candidacy for capture leadership.
`app` serves Socket.IO at /admin/socket.io and the Flask app for everything else.
"""

from admin_service import create_app
from admin_service.live.socketio import mount_socketio
from admin_service.services import services

flask_app = create_app()
services(flask_app).runtime.start()
app = mount_socketio(flask_app)
