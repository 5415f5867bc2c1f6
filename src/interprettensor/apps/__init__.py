"""The applications: the ``interprettensor`` command line (:mod:`.cli`) and the demo (:mod:`.demo`)."""
