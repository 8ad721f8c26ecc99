"""Stand-ins shared by the tests (``tests/``) and the checkout tools (``tools/``), never by the daemon.

``ports.free_port`` (one port allocator, per xdist worker), ``fake_pushover.FakePushover`` (the
Pushover API stand-in), ``mosquitto.Broker`` (a real local mosquitto). Not installed: like ``tools``
and ``train`` it runs from the repository root; it imports nothing from ``raccoon_watch`` or pytest.
"""
