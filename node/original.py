"""The Original Attributes Sequence (0400,0561): one item per change of an instance's values, PS3.3
C.12.1.1.9.2 and Table C.12-1.

Both sides of the node change values and must say so the same way: the import's coercion
(:mod:`node.read.coerce`, reason ``COERCE``) and the burn's repair (:mod:`node.media.repair`, reason
``CORRECT``). An item holds:

- Modified Attributes Sequence (0400,0550): one item with the old values of the changed attributes; an
  attribute that was absent, or changed because its value did not conform to its VR, with no value;
- Nonconforming Modified Attributes Sequence (0400,0551), one item: the value of an attribute changed
  because it did not conform, as its bytes (Nonconforming Data Element Value (0400,0552), OB), named by
  the Selector Attribute Macro (PS3.3 Table 10-20) through the sequences and items that hold it; so each
  such attribute has an Original Attributes Sequence item of its own;
- Attribute Modification DateTime (0400,0562): when, a DT with its UTC offset;
- Modifying System (0400,0563): ``MEDIANODE``;
- Source of Previous Values (0400,0564): where the old values came from (Type 2: may be empty);
- Reason for the Attribute Modification (0400,0565): a defined term, ``COERCE`` or ``CORRECT``.

Items already in the sequence are kept.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

#: Modifying System (0400,0563), LO.
MODIFYING_SYSTEM = "MEDIANODE"
#: Reason for the Attribute Modification (0400,0565), PS3.3 C.12.1.1.9.2: values replaced on import from
#: another institution (COERCE), or values corrected to conform to the standard (CORRECT).
Reason = Literal["COERCE", "CORRECT"]


def modification_time(now: datetime | None = None) -> str:
    """``now`` as a DT with its UTC offset (PS3.5 6.2, 26 characters at most).

    >>> len(modification_time(datetime(2026, 1, 2, 3, 4, 5))) <= 26
    True
    """
    return (now or datetime.now()).astimezone().strftime("%Y%m%d%H%M%S.%f%z")


def nonconforming(tag: int, value: bytes, *, within: tuple[tuple[int, int], ...] = ()) -> Dataset:
    """An item of the Nonconforming Modified Attributes Sequence: ``tag``'s old ``value`` (all its values,
    Selector Value Number 0), held ``within`` these (sequence tag, item number from 1), outermost first.

    >>> item = nonconforming(0x00081150, b"1.2 ", within=((0x00081140, 2),))
    >>> item.SelectorAttribute, item.SelectorSequencePointer, item.SelectorSequencePointerItems
    ((0008,1150), (0008,1140), '2')
    """
    item = Dataset()
    item.SelectorAttribute = Tag(tag)
    item.SelectorValueNumber = 0
    if within:
        item.SelectorSequencePointer = [Tag(t) for t, _ in within] if len(within) > 1 else Tag(within[0][0])
        item.SelectorSequencePointerItems = [str(n) for _, n in within] if len(within) > 1 else str(within[0][1])
    item.NonconformingDataElementValue = value + b"\0" * (len(value) % 2)
    return item


def record(ds: Dataset, old: Dataset, *, reason: Reason, when: str, source: str = "",
           nonconforming: Dataset | None = None) -> None:
    """Append to ``ds``'s Original Attributes Sequence the item that keeps ``old`` (the changed attributes
    as they were) and a ``nonconforming`` value (:func:`nonconforming`), and drop the (retired) Group
    Lengths the change made wrong (PS3.5 7.2).

    >>> ds, old = Dataset(), Dataset()
    >>> old.PatientID, ds.PatientID = "A-1", "B-1"
    >>> record(ds, old, reason="COERCE", when="20260102030405")
    >>> item = ds.OriginalAttributesSequence[0]
    >>> item.ModifiedAttributesSequence[0].PatientID, item.ReasonForTheAttributeModification
    ('A-1', 'COERCE')
    """
    for group in {elem.tag.group for elem in old} | {0x0400}:
        ds.pop(Tag(group, 0x0000), None)
    item = Dataset()
    item.ModifiedAttributesSequence = Sequence([old])
    if nonconforming is not None:
        item.NonconformingModifiedAttributesSequence = Sequence([nonconforming])
    item.AttributeModificationDateTime = when
    item.ModifyingSystem = MODIFYING_SYSTEM
    item.SourceOfPreviousValues = source
    item.ReasonForTheAttributeModification = reason
    if "OriginalAttributesSequence" in ds:
        ds.OriginalAttributesSequence.append(item)
    else:
        ds.OriginalAttributesSequence = Sequence([item])
