"""The device house: what runs on a board. Bundle reading, the Model runtime, the native glue,
preprocessing, postprocessing, the benchmark and the golden check. Imports numpy, edgesdk._native,
the shared modules (errors, atomic, backends.base/registry) and the one engine a bundle names; never
edgesdk.build (tests/test_imports.py holds it to that)."""
