"""Users as the admin pages see them: /admin/users/<id>/jobs (the old dashboard's call)."""
