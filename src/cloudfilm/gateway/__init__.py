"""The edge gateway (``cloudfilm gateway``): the hospital's local DICOM and report door.

It spools everything durably and forwards it to the cloud archive by STOW-RS and the reports
API (see docs/gateway.md).
"""
