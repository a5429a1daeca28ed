"""Decoding, transcoding and rendering pixel data; derived output only, originals untouched."""
