"""PS3.2 section 6, Support of Character Sets: what is decoded for the index and reports (pydicom's
character sets), and what medianode writes itself."""

from __future__ import annotations

from pydicom.charset import python_encoding


def section() -> str:
    """PS3.2 section 6: the character sets decoded, and those written."""
    known = ", ".join(f"`{c}`" for c in sorted(python_encoding) if c)
    return (
        "## Support of Character Sets\n\n"
        "Received instances are stored as they arrived, whatever their Specific Character Set (0008,0005). "
        "Patient's Name and Patient ID are decoded for the index, the logs and the reports with these "
        f"character sets (the default repertoire when absent): {known}. "
        "A value that cannot be decoded never refuses an instance.\n\n"
        "A DICOMDIR record copies the instance's Specific Character Set when one of its keys holds a value "
        "beyond ASCII. The values medianode writes itself (coerced Patient IDs, Issuer of Patient ID, "
        "labels) are of the default repertoire.\n"
    )
