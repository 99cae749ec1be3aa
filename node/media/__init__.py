"""Create media (the FSC role): sources -> plan -> file-set and DICOMDIR -> image or folder -> output.

The front door: a module outside this room imports only the modules named in
``__all__``; the others (transcode, directory, layout, dicomdir,
content, iso, udf, folder) are the room's own and may change
shape freely. The door names modules, not names, and imports nothing itself,
so each module loads when it is first used: a burn of files already in an
allowed syntax never loads pydicom.
"""

__all__ = [
    "basic_profile",  # PS3.15 Table E.1-1, the Basic Profile's action per attribute, as data
    "build",  # burn(): sources -> one volume, and the report of what became of each file
    "capture",  # images and PDFs -> Secondary Capture and Encapsulated PDF (seed Appendix A)
    "compress",  # the syntax an image is written in, and its encoding with the seed's Appendix B
    "deidentify",  # the PS3.15 Annex E Basic Profile applied to a data set
    "label",  # a volume's label record: what is printed on the disc
    "outputs",  # where a built volume goes: folder, xorriso drive, USB volume, robot
    "series",  # Smallest / Largest Pixel Value in Series of lossy images, over their series on the medium
    "pdi",  # IHE PDI: README.TXT, INDEX.HTM, IHE_PDI/, a viewer
    "plan",  # a burn's Options: what happens to each instance on its way to a medium
    "publisher",  # Epson / Rimage robot hot folders
    "sources",  # the DICOM files under the sources named, and their headers
    "uids",  # one UID map per disc: new UIDs, applied to every reference
    "waiting",  # how an output waits for a blank disc or a robot
]
