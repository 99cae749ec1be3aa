"""medianode: a DICOM node that bridges the network and removable media."""

import logging

__version__ = "0.1.0"

logging.getLogger("node").addHandler(logging.NullHandler())
