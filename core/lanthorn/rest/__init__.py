"""The Orthanc-compatible REST API of the core, grouped by resource."""
