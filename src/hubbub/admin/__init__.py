"""The admin console at ``/admin`` (off unless ``[admin] enabled``): see ``docs/admin.md``.

:class:`hubbub.admin.console.AdminConsole` wires its parts into the server app: the routes
(:mod:`hubbub.admin.routes`), who a request is (:mod:`hubbub.admin.access`), the live numbers
every node publishes (:mod:`hubbub.admin.live`) and the API methods the console needs beyond
Centrifugo's (:mod:`hubbub.admin.methods`). This package imports nothing itself, so that
``hubbub admin-hash`` (:mod:`hubbub.admin.passwords`) loads no server.
"""
