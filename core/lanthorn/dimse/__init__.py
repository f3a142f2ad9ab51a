"""DICOM network services (pynetdicom): the listener's SCP handlers."""
