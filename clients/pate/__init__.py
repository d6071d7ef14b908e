"""The party side of ensemble-label distillation (PATE): teacher and student nodes.

- :mod:`clients.pate.node`: what every PATE node answers, whatever its role (``query.describe``,
  ``query.prepare``);
- :mod:`clients.pate.teacher`, :mod:`clients.pate.teacher_ensemble`: a teacher node's handlers and its
  teachers trained and queried as one batched ensemble; :mod:`clients.pate.augment`: their augmentation;
- :mod:`clients.pate.secagg`, :mod:`clients.pate.local_rr`: a teacher node's votes noised before they leave
  it (secure aggregation, local randomised response);
- :mod:`clients.pate.student`, :mod:`clients.pate.semi_supervised`, :mod:`clients.pate.student_model`: the
  student node, its training on its own unlabeled pool, the saved model and ``predict``;
- :mod:`clients.pate.sites`, :mod:`clients.pate.site_files`, :mod:`clients.pate.site_csv`: what a node
  trains and answers on (its own site file or its part of the bundled split).

Shared with the other methods: ``clients.data``, ``clients.data_cache``, ``clients.encoders``,
``clients.training``, ``clients.node_output``, ``clients.progress_log``.
"""
