"""BERT -> BiLSTM distillation (Tang et al. 2019) as a DVC pipeline; one module per stage."""
