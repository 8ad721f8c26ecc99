"""raccoon_watch training pipeline: VOC XML -> CSV -> TFRecord -> SSD fine-tuning -> evaluation -> export."""
