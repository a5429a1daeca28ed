"""The HTTP server: DICOMweb, our JSON API, the viewer and the patient pages, in one ASGI app."""
