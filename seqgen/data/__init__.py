"""Data layer: tokenizers and vocabularies (`vocab`, `abc_tokens`), corpora (`folk`, `text`,
`synthetic` DPFSA oracle) behind `corpus.load_corpus`, and fixed-shape `batching`."""
