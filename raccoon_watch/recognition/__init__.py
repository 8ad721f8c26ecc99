"""Recognition: what is in a frame, from pixels to scored animals.

- ``recognizer.py``: ``Recognizer.recognize``, the one inference path (detector proposals, crops,
  classifier votes grouped per animal) that the workers, ``detect``, ``serve`` and train/ all run;
- ``detectors/``: the detector backends behind one interface (TFLite, batched TFLite SSD,
  TensorFlow SavedModel, a remote DeepStack-compatible server) and the factory that picks one;
- ``classifier.py``: the TFLite crop classifier that names the species;
- ``imagemode.py``: colour or infrared, by one pure rule; ``labels.py``: model label maps;
- ``modelfiles.py``: a model folder's file names, defined once (a leaf module train/ imports too).
"""
