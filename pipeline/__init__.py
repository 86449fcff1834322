"""BERT -> BiLSTM distillation (Tang et al. 2019) as a DVC pipeline; one module per stage."""

from pipeline.bundled import use_bundled_nltk_data

# Before any stage imports NLTK: the POS tagger shipped in nltk_data/ is found with no
# $NLTK_DATA and no download (pipeline/bundled.py).
use_bundled_nltk_data()
