"""A minimal Django project that answers hubbub's proxy requests (see ``views.py``)."""
