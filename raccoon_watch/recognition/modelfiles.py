"""The file names of a model folder (what ``train/`` exports to ``models/<name>/``), defined once.

A leaf: it imports nothing, so the detector factory, the site's model store (``site_models``) and
the training exporters (``train/export.py``, ``train/classifier/export.py``, ``train/model_card.py``)
all take the names from here.

    models/<name>/
        model.tflite              the detector, full-integer int8 (MODEL_TFLITE)
        model_float.tflite        the same detector in float (MODEL_TFLITE_FLOAT)
        saved_model/              the TF2 SavedModel (SAVED_MODEL_DIR; its graph in SAVED_MODEL_PB)
        labelmap.pbtxt            the label map (LABEL_MAP; also read: LABELMAP_NAMES)
        model_card.json           the detector's card (MODEL_CARD)
        classifier.tflite         the raccoon classifier stage (CLASSIFIER_FILE)
        classifier_card.json      its card (CLASSIFIER_CARD)
"""

from __future__ import annotations

MODEL_TFLITE = "model.tflite"
MODEL_TFLITE_FLOAT = "model_float.tflite"
SAVED_MODEL_DIR = "saved_model"
SAVED_MODEL_PB = "saved_model.pb"
LABEL_MAP = "labelmap.pbtxt"
LABELMAP_NAMES = (LABEL_MAP, "label_map.pbtxt", "labels.txt", "labelmap.txt")  # read in this order
MODEL_CARD = "model_card.json"
CLASSIFIER_FILE = "classifier.tflite"
CLASSIFIER_CARD = "classifier_card.json"
