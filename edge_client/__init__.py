"""The edge device process: frame, encode, project, keep the allocated components, send."""
