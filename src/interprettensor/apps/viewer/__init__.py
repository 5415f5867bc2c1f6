"""``interprettensor view``: a local web viewer of explained data sets, SpRAy results and concepts.

:mod:`.runs` finds the runs on disk and reads them lazily, :mod:`.images` renders the pictures,
:mod:`.server` answers the page (``static/``: plain HTML, CSS and JavaScript, nothing downloaded).
Needs neither TensorFlow nor Keras.
"""

from .server import Viewer, make_server, serve_in_thread

__all__ = ["Viewer", "make_server", "serve_in_thread"]
